"""The metrics answer: the text format or OpenMetrics as the scraper's `Accept` asks, gzip when its
`Accept-Encoding` allows, `name[]` filtering, and text that reads back as the samples it was written from,
whatever a Room puts in a label value.

Runs against whatever prometheus_client is installed: `make test-min` runs this file at the lowest declared
version too.
"""

from __future__ import annotations

import gzip
import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.collect.collection import Collection
from exporter.collect.families import collection_metrics
from exporter.room import parse_target
from exporter.room.picture import parse_room
from exporter.web.app import metrics_answer
from tests.test_parser_properties import PROPERTY_SETTINGS, scrapes

PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
OPENMETRICS = [
    PROMETHEUS_2,
    PROMETHEUS_3,
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0; charset=utf-8, text/plain;version=0.0.4;q=0.5",
]
TEXT_FORMAT = [None, "", "text/plain;version=0.0.4", "*/*", "text/html"]
ACCEPT_HEADERS = OPENMETRICS + TEXT_FORMAT

LABEL_NAMES = st.from_regex(r"\A[a-z][a-z0-9_]{0,8}\Z", fullmatch=True)
WORDS = st.text(st.characters(exclude_categories=("Cs",)), max_size=30) | st.sampled_from(
    ['a "quoted" \\ back\nslash', "ünïcødé ✓", "", "\\n", '"', "}", "\\"]
)
VALUES = (
    st.floats(allow_nan=True)
    | st.integers(-(10**20), 10**20)  # ints as the Room's families give them (counts, 0/1 states)
    | st.sampled_from([-0.0, 1e-300, 0, 1, True])
)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], str]


class Fixed:
    """A registry's collector that hands over a fixed list of families (and names them, as the exporter's
    collectors do, so that `name[]` can find them)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families

    def describe(self) -> list[Metric]:
        return self.families


def answer(
    families: list[Metric], accept: str | None = None, encoding: str | None = None, query: str = ""
) -> tuple[str, dict[str, str], bytes]:
    """What /metrics or /probe answers for `families`: status, headers, body."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed(families))  # type: ignore[arg-type]
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/probe", "QUERY_STRING": query}
    if accept is not None:
        environ["HTTP_ACCEPT"] = accept
    if encoding is not None:
        environ["HTTP_ACCEPT_ENCODING"] = encoding
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started.extend([status, dict(headers)])

    body = b"".join(metrics_answer(registry, environ, start_response))
    return started[0], started[1], body


def comparable(value: float) -> str:
    """A value as the text formats mean it: NaN is NaN, an int is the float it is written as."""
    return "NaN" if math.isnan(value) else repr(float(value))


def written(families: list[Metric]) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): comparable(sample.value)
        for family in families
        for sample in family.samples
    }


def read_back(content_type: str, body: bytes) -> Samples:
    """The samples a scraper reads from the answer, with the parser its content type calls for."""
    parse = parse_openmetrics if content_type.startswith("application/openmetrics-text") else parse_text
    return written(list(parse(body.decode())))


def up_and_errors() -> list[Metric]:
    up = GaugeMetricFamily("trueconf_up", "1 if the Room answered.", value=1)
    errors = GaugeMetricFamily("trueconf_scrape_error", "Why not.", labels=["reason"])
    errors.add_metric(["timeout"], 0)
    return [up, errors]


@pytest.mark.parametrize("accept", OPENMETRICS, ids=["prometheus-2", "prometheus-3", "bare", "with-charset"])
def test_openmetrics_when_the_scraper_asks_for_it(accept: str) -> None:
    status, headers, body = answer(up_and_errors(), accept)
    assert status == "200 OK"
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=")
    assert "; charset=utf-8" in headers["Content-Type"]
    assert body.endswith(b"# EOF\n")
    assert read_back(headers["Content-Type"], body) == written(up_and_errors())


@pytest.mark.parametrize("accept", TEXT_FORMAT)
def test_the_text_format_otherwise(accept: str | None) -> None:
    status, headers, body = answer(up_and_errors(), accept)
    assert status == "200 OK"
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"# EOF" not in body
    assert read_back(headers["Content-Type"], body) == written(up_and_errors())


@pytest.mark.parametrize("accept", [None, PROMETHEUS_2])
@pytest.mark.parametrize(
    ("encoding", "gzipped"),
    [
        (None, False),
        ("identity", False),
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
    ],
)
def test_gzip_when_the_scraper_accepts_it(accept: str | None, encoding: str | None, gzipped: bool) -> None:
    _, plain_headers, plain = answer(up_and_errors(), accept)
    _, headers, body = answer(up_and_errors(), accept, encoding)
    assert ("Content-Encoding" in headers) is gzipped
    if gzipped:
        assert headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(body)
    assert headers["Content-Type"] == plain_headers["Content-Type"]
    assert body == plain


@pytest.mark.parametrize("accept", [None, PROMETHEUS_2])
def test_name_filters_keep_only_the_families_named(accept: str | None) -> None:
    _, headers, body = answer(up_and_errors(), accept, query="target=x&module=default&name[]=trueconf_up")
    assert set(read_back(headers["Content-Type"], body)) == {("trueconf_up", frozenset())}
    _, headers, body = answer(up_and_errors(), accept, query="target=x&module=default")
    assert len(read_back(headers["Content-Type"], body)) == 2


@st.composite
def families(draw: st.DrawFn) -> list[Metric]:
    """Gauges, counters and info families with any words in their help and label values."""
    drawn = []
    for index in range(draw(st.integers(1, 4))):
        name = f"trueconf_family_{index}"
        kind = draw(st.sampled_from(["gauge", "counter", "info"]))
        documentation = draw(WORDS)
        label_names = draw(st.lists(LABEL_NAMES.filter(lambda n: n != "version"), unique=True, max_size=3))
        series = draw(st.lists(st.tuples(*(WORDS for _ in label_names)), unique=True, max_size=4))
        family: Metric
        if kind == "gauge":
            family = GaugeMetricFamily(name, documentation, labels=label_names)
            for values in series:
                family.add_metric(list(values), draw(VALUES))
        elif kind == "counter":
            family = CounterMetricFamily(name, documentation, labels=label_names)
            counts = VALUES.filter(lambda v: not math.isnan(v) and v >= 0)  # OpenMetrics has no NaN counter
            for values in series:
                family.add_metric(list(values), draw(counts))
        else:
            family = InfoMetricFamily(name, documentation, labels=label_names)
            for values in series:
                family.add_metric(list(values), {"version": draw(WORDS)})
        drawn.append(family)
    return drawn


@PROPERTY_SETTINGS
@given(families(), st.sampled_from(ACCEPT_HEADERS))
@example([up_and_errors()[1]], PROMETHEUS_2)
def test_any_label_value_reads_back_as_written(drawn: list[Metric], accept: str | None) -> None:
    """Quotes, backslashes, newlines and any Unicode in label values are escaped, in either format."""
    _, headers, body = answer(drawn, accept)
    assert read_back(headers["Content-Type"], body) == written(drawn)


@PROPERTY_SETTINGS
@given(scrapes(), st.sampled_from([None, PROMETHEUS_2]), st.floats(0, 10))
def test_a_rooms_families_read_back_as_written(
    scrape: tuple[dict[str, dict[str, Any]], tuple[str, ...]], accept: str | None, duration: float
) -> None:
    answers, asked = scrape
    picture = parse_room(answers, asked, 1_700_000_000.0)
    collection = Collection(
        parse_target("ws://127.0.0.1:8765"), duration, 1_700_000_000.0, picture.outgoing, None, picture
    )
    room_families = list(collection_metrics(collection))
    _, headers, body = answer(room_families, accept)
    assert read_back(headers["Content-Type"], body) == written(room_families)
