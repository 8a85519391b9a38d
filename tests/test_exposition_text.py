"""The prepared exposition text (web/exposition.py) is prometheus_client's own, byte for byte.

Checked against the library's encoders at whatever version is installed: `make test-min` runs this file at
the lowest declared prometheus_client too.
"""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from exporter.collect.collection import Collection
from exporter.collect.families import collection_metrics
from exporter.room import parse_target
from exporter.room.picture import parse_room
from exporter.web.exposition import MAX_CONTENT_TYPES, MAX_VARIANTS, PreparedText, metrics_answer
from tests.test_parser_properties import PROPERTY_SETTINGS, scrapes

ACCEPT_HEADERS = [
    None,
    "text/plain;version=0.0.4",
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0",
    "application/openmetrics-text; version=1.0.0; charset=utf-8, text/plain;version=0.0.4;q=0.5",
    "application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=underscores",
]
"""Prometheus 2 and 3 defaults among them: the library picks the encoder, the prepared text must follow."""

NAMES = st.from_regex(r"\A[a-z_][a-z0-9_]{0,20}\Z", fullmatch=True)
LABEL_NAMES = st.from_regex(r"\A[a-z][a-z0-9_]{0,8}\Z", fullmatch=True)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30) | st.sampled_from(
    ['a "quoted" \\ back\nslash', "ünïcødé ✓", "", "\\n", '"']
)
VALUES = (
    st.floats(allow_nan=True)
    | st.integers(-(10**20), 10**20)  # ints as the Room's families give them (counts, 0/1 states)
    | st.integers(-(10**20), 10**20).map(float)
    | st.sampled_from([-0.0, 1e-300, 0, 1, 1023, 1024, True])
)


class Fixed:
    """A registry's collector that hands over a fixed list of families."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def registry_of(families: list[Metric]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed(families))  # type: ignore[arg-type]
    return registry


def library_text(families: list[Metric], accept: str | None) -> bytes:
    encoder, _ = choose_encoder(accept or "")
    return encoder(registry_of(families))


def prepared(text: PreparedText, families: list[Metric], accept: str | None) -> bytes:
    encoder, content_type = choose_encoder(accept or "")
    return text.encode(families, encoder, content_type)


@st.composite
def family_lists(draw: st.DrawFn) -> tuple[list[Metric], list[Metric]]:
    """Families of one shape twice, with other values the second time (the prepared shape is reused)."""
    firsts, seconds = [], []
    for index in range(draw(st.integers(1, 4))):
        name = f"{draw(NAMES)}_{index}"
        kind = draw(st.sampled_from(["gauge", "counter", "info"]))
        documentation = draw(TEXT)
        label_names = draw(st.lists(LABEL_NAMES, unique=True, max_size=3))
        series = draw(st.lists(st.tuples(*(TEXT for _ in label_names)), unique=True, max_size=4))
        with_created = kind == "counter" and draw(st.booleans())
        pair = []
        for _ in range(2):
            if kind == "gauge":
                family: Metric = GaugeMetricFamily(name, documentation, labels=label_names)
                for values in series:
                    family.add_metric(list(values), draw(VALUES))
            elif kind == "counter":
                family = CounterMetricFamily(name, documentation, labels=label_names)
                for values in series:
                    family.add_metric(list(values), draw(VALUES), created=1.5 if with_created else None)
            else:
                family = InfoMetricFamily(name, documentation, labels=label_names)
                for values in series:
                    family.add_metric(list(values), {"version": draw(TEXT)})
            pair.append(family)
        firsts.append(pair[0])
        seconds.append(pair[1])
    return firsts, seconds


@PROPERTY_SETTINGS
@given(family_lists(), st.sampled_from(ACCEPT_HEADERS))
def test_any_families_are_written_as_the_library_writes_them(
    families: tuple[list[Metric], list[Metric]], accept: str | None
) -> None:
    text = PreparedText()
    first, second = families
    assert prepared(text, first, accept) == library_text(first, accept)
    assert prepared(text, second, accept) == library_text(second, accept), "a prepared shape, new values"
    assert prepared(SHARED, first, accept) == library_text(first, accept), "among every other shape"


SHARED = PreparedText()


@PROPERTY_SETTINGS
@given(scrapes(), st.sampled_from(ACCEPT_HEADERS), st.floats(0, 10), st.floats(0, 10))
@example(
    ({"getOutgoingFilesRequests": {"result": True}}, ("getOutgoingFilesRequests",)),
    "application/openmetrics-text;version=1.0.0",
    float("nan"),
    0.0,
)
def test_a_rooms_families_are_written_as_the_library_writes_them(
    scrape: tuple[dict[str, dict[str, Any]], tuple[str, ...]],
    accept: str | None,
    duration: float,
    later_duration: float,
) -> None:
    answers, asked = scrape
    picture = parse_room(answers, asked, 1_700_000_000.0)
    text = SHARED  # every example's shapes side by side: a shape must never answer for another
    for seconds in (duration, later_duration):
        collection = Collection(
            parse_target("ws://127.0.0.1:8765"), seconds, 1_700_000_000.0, picture.outgoing, None, picture
        )
        families = list(collection_metrics(collection))
        assert prepared(text, families, accept) == library_text(families, accept)


def test_shapes_are_prepared_once_and_bounded() -> None:
    text = PreparedText(max_shapes=20)

    def info(version: str, name: str = "trueconf_room_info") -> Metric:
        family = GaugeMetricFamily(name, "The Room's version.", labels=["version"])
        family.add_metric([version], 1)
        return family

    for _ in range(3):
        text.encode([info("5.0.2.17")], *choose_encoder(""))
    assert len(text) == 1
    for build in range(100):  # Rooms of many versions, probed in turn: the newest shapes of a family kept
        assert text.encode([info(f"5.0.2.{build % 12}")], *choose_encoder("")) == library_text(
            [info(f"5.0.2.{build % 12}")], None
        )
    assert len(text) == MAX_VARIANTS
    for number in range(30):  # many families: the oldest dropped first
        text.encode([info("1.0.0.0", name=f"family_{number}")], *choose_encoder(""))
    assert len(text) <= 20


@pytest.mark.parametrize("accept", ACCEPT_HEADERS)
@pytest.mark.parametrize("encoding", [None, "gzip", "gzip, deflate, br", "identity"])
@pytest.mark.parametrize("query", ["", "target=x&module=default", "name[]=trueconf_up"])
def test_the_answer_is_the_librarys_wsgi_answer(accept: str | None, encoding: str | None, query: str) -> None:
    up = GaugeMetricFamily("trueconf_up", "1 if the Room answered.", value=1)
    errors = GaugeMetricFamily("trueconf_scrape_error", "Why not.", labels=["reason"])
    errors.add_metric(["timeout"], 0)
    registry = registry_of([up, errors])
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/probe", "QUERY_STRING": query}
    if accept is not None:
        environ["HTTP_ACCEPT"] = accept
    if encoding is not None:
        environ["HTTP_ACCEPT_ENCODING"] = encoding
    answers = []
    for app in (make_wsgi_app(registry), lambda env, start: metrics_answer(registry, env, start)):
        started: list[Any] = []

        def start_response(status: str, headers: list[Any], *_: Any, into: list[Any] = started) -> None:
            into.extend([status, headers])

        body = b"".join(app(dict(environ), start_response))
        headers = dict(started[1])
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)  # gzip's header carries a time: compare what it holds
        answers.append((started[0], headers, body))
    assert answers[1] == answers[0]
    if query.startswith("name[]"):
        assert b"trueconf_scrape_error" not in answers[1][2]


def test_content_types_past_the_bound_are_written_by_the_library_and_never_kept() -> None:
    """prometheus_client 0.21+ copies the `version=` a client asks for into the content type: a client that
    asks for a new one at every scrape must not grow the cache, nor push the real shapes out."""
    text = PreparedText()
    family = GaugeMetricFamily("trueconf_up", "1 if the Room answered.", value=1)
    encoder, content_type = choose_encoder("application/openmetrics-text;version=1.0.0")
    text.encode([family], encoder, content_type)
    kept = len(text)
    expected = library_text([family], "application/openmetrics-text")
    for number in range(MAX_CONTENT_TYPES * 10):
        made_up = f"application/openmetrics-text; version=1.0.0.{number}; charset=utf-8"
        assert text.encode([family], encoder, made_up) == expected
    assert len(text) <= kept + MAX_CONTENT_TYPES - 1
    assert text.encode([family], encoder, content_type) == expected
