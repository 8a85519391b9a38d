"""The HTTP app over a real socket: /metrics up and down, negotiation, /, /healthz, overlapping scrapes."""

from __future__ import annotations

import gzip
import platform
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from exporter import __version__
from exporter.build import revision
from exporter.emulator.faults import Fault
from exporter.emulator.scenario import load_scenario
from exporter.room import parse_target
from exporter.web.app import ExporterApp, effective_timeout
from exporter.web.server import parse_listen_address
from exporter.web.settings import ExporterSettings
from tests.exposition import names, samples, value
from tests.processes import http_get

REQUEST_GAUGES = {
    "trueconf_outgoing_file_requests",
    "trueconf_outgoing_file_requests_size_bytes",
    "trueconf_outgoing_file_requests_oldest_pending_age_seconds",
    "trueconf_outgoing_file_requests_malformed",
}


@pytest.fixture
def exporter(serve_app):
    """Serve ExporterApp for the given target on a free loopback port; returns its base URL."""

    def start(
        target: str, pin: str | None = None, timeout: float = 5.0, process_metrics: bool = False
    ) -> str:
        return serve_app(ExporterApp(ExporterSettings(parse_target(target), pin, timeout, process_metrics)))

    return start


def scrape(url: str, **headers: str) -> str:
    status, _, body = http_get(f"{url}/metrics", headers)
    assert status == 200
    return body.decode()


def test_metrics_of_a_room_that_answers(room, exporter):
    text = scrape(exporter(f"ws://127.0.0.1:{room('doc-example').ports.websocket}"))
    assert value(text, "trueconf_up") == 1
    assert value(text, "trueconf_outgoing_file_requests", status="downloading", destination="peer") == 1
    assert value(text, "trueconf_outgoing_file_requests", status="downloading", destination="conference") == 1
    assert (
        value(text, "trueconf_outgoing_file_requests_size_bytes", status="downloading", destination="peer")
        == 3200
    )
    assert (
        value(text, "trueconf_outgoing_file_requests_oldest_pending_timestamp_seconds", status="downloading")
        == 1659251271
    )
    assert (
        value(text, "trueconf_outgoing_file_requests_oldest_pending_age_seconds", status="downloading") > 1e8
    )
    assert value(text, "trueconf_outgoing_file_requests_oldest_pending_age_seconds", status="waiting") == 0
    with pytest.raises(KeyError):  # no waiting request: no timestamp (a 0 would read as 1970)
        value(text, "trueconf_outgoing_file_requests_oldest_pending_timestamp_seconds", status="waiting")
    for reason in ("connect", "timeout", "auth", "api", "protocol"):
        assert value(text, "trueconf_scrape_error", reason=reason) == 0
    assert (
        value(
            text,
            "trueconf_exporter_build_info",
            version=__version__,
            revision=revision(),
            python_version=platform.python_version(),
        )
        == 1
    )
    assert revision() != "unknown", "the tests run from a git checkout, whose HEAD is the revision"
    series = samples(text)
    request_series = [labels for name, labels in series if name == "trueconf_outgoing_file_requests"]
    assert len(request_series) == 10  # 5 statuses x 2 destinations, zeros included


def test_no_label_carries_a_file_name_peer_or_request_id(room, exporter):
    text = scrape(exporter(f"ws://127.0.0.1:{room('doc-example').ports.websocket}"))
    label_names = {name for _, labels in samples(text) for name, _ in labels}
    assert label_names == {
        "status",
        "destination",
        "reason",
        "version",
        "revision",
        "python_version",
        "method",
        "source",
        "state",
        "name",  # trueconf_room_identity_info: the Room's own name and ID, one series; never its peers'
        "peer_id",
    }
    assert len(identities(text)) == 1
    for word in ("2.jpg", "820_1", "0d99602a", "some.server", "346234218"):
        assert word not in text


def test_a_room_that_cannot_be_read_is_up_0_with_http_200_and_no_request_gauges(exporter):
    text = scrape(exporter("127.0.0.1:1"))
    assert value(text, "trueconf_up") == 0
    assert value(text, "trueconf_scrape_error", reason="connect") == 1
    assert value(text, "trueconf_scrape_error", reason="timeout") == 0
    assert not names(text) & REQUEST_GAUGES
    assert "trueconf_scrape_duration_seconds" in names(text)
    assert "trueconf_exporter_build_info" in names(text)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault.SILENT, "timeout"),
        (Fault.OLD_ROOM, "api"),
        (Fault.NOT_JSON, "protocol"),
        (Fault.HTTP_INSTEAD_OF_WEBSOCKET, "connect"),
    ],
)
def test_every_failure_still_answers_200_within_the_deadline(room, exporter, fault, reason):
    url = exporter(f"ws://127.0.0.1:{room('doc-example', fault=fault).ports.websocket}", timeout=1.0)
    started = time.monotonic()
    text = scrape(url)
    assert time.monotonic() - started < 2.5
    assert value(text, "trueconf_up") == 0
    assert value(text, "trueconf_scrape_error", reason=reason) == 1
    assert sum(v for (n, _), v in samples(text).items() if n == "trueconf_scrape_error") == 1


def test_wrong_pin_is_auth(room, exporter):
    text = scrape(exporter(f"ws://127.0.0.1:{room('doc-example', pin='2468').ports.websocket}", pin="1357"))
    assert value(text, "trueconf_scrape_error", reason="auth") == 1


def test_scrape_timeout_header_shortens_the_deadline(room, exporter):
    url = exporter(f"ws://127.0.0.1:{room('doc-example', fault=Fault.SILENT).ports.websocket}", timeout=20)
    started = time.monotonic()
    text = scrape(url, **{"X-Prometheus-Scrape-Timeout-Seconds": "1.5"})
    assert time.monotonic() - started < 2.5
    assert value(text, "trueconf_scrape_error", reason="timeout") == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 5.0),
        ("10", 5.0),
        ("3", 2.5),
        ("0.2", 0.1),
        ("nonsense", 5.0),
        ("-1", 5.0),
        ("nan", 5.0),
    ],
)
def test_effective_timeout(header, expected):
    assert effective_timeout(5.0, header) == pytest.approx(expected)


def test_openmetrics_when_asked_and_gzip_when_asked(room, exporter):
    url = exporter(f"ws://127.0.0.1:{room('doc-example').ports.websocket}")
    status, headers, body = http_get(
        f"{url}/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.decode().rstrip().endswith("# EOF")
    status, headers, body = http_get(f"{url}/metrics", {"Accept-Encoding": "gzip"})
    assert headers.get("Content-Encoding") == "gzip"
    assert b"trueconf_up 1.0" in gzip.decompress(body)


def test_process_metrics_are_off_by_default_and_on_when_asked(room, exporter):
    target = f"ws://127.0.0.1:{room('doc-example').ports.websocket}"
    assert not any(n.startswith(("process_", "python_")) for n in names(scrape(exporter(target))))
    with_process = names(scrape(exporter(target, process_metrics=True)))
    assert "process_resident_memory_bytes" in with_process
    assert "python_gc_objects_collected_total" in with_process


def test_landing_page_healthz_and_unknown_paths(exporter):
    url = exporter("ws://127.0.0.1:1", pin="55555")
    status, headers, body = http_get(f"{url}/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "TrueConf Room exporter" in page and 'href="metrics"' in page
    assert "ws://127.0.0.1:1" in page and "55555" not in page
    assert http_get(f"{url}/healthz")[:1] == (200,)
    assert http_get(f"{url}/nope")[0] == 404


def test_overlapping_scrapes_each_get_a_consistent_result(room, exporter):
    scenario = load_scenario("doc-example")
    scenario.notifications_before_reply = 200
    url = exporter(f"ws://127.0.0.1:{room(scenario).ports.websocket}")
    with ThreadPoolExecutor(max_workers=8) as pool:
        texts = list(pool.map(lambda _: scrape(url), range(24)))
    for text in texts:
        assert value(text, "trueconf_up") == 1
        assert sum(v for (n, _), v in samples(text).items() if n == "trueconf_outgoing_file_requests") == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":18765", ("", 18765)),
        ("127.0.0.1:9", ("127.0.0.1", 9)),
        ("[::1]:80", ("::1", 80)),
    ],
)
def test_listen_addresses(text, expected):
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["18765", "host:", "host:port", ":99999", ""])
def test_bad_listen_addresses(text):
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen_address(text)


def identities(text: str) -> list[dict[str, str]]:
    return [dict(labels) for (name, labels) in samples(text) if name == "trueconf_room_identity_info"]


def test_the_rooms_name_for_joins_on_every_scrape_of_its_session(room, exporter):
    scenario = load_scenario("doc-example")
    scenario.auth_info = {"peerId": "hall@example.org", "peerDn": "Great <hall>"}
    url = exporter(f"ws://127.0.0.1:{room(scenario).ports.websocket}")
    first, second = scrape(url), scrape(url)
    assert value(first, "trueconf_scrape_method_success", method="getSystemInfo") == 1
    with pytest.raises(KeyError):  # asked once per session: not this time
        value(second, "trueconf_scrape_method_success", method="getSystemInfo")
    for text in (first, second):
        assert identities(text) == [{"name": "Great <hall>", "peer_id": "hall@example.org"}]
    page = http_get(f"{url}/")[2].decode()
    assert "<b>Great &lt;hall&gt;</b><br><small>127.0.0.1:" in page


def test_a_room_not_logged_in_has_no_name(room, exporter):
    scenario = load_scenario("doc-example")
    scenario.app_state = 2  # login required: getSystemInfo carries no authInfo
    text = scrape(exporter(f"ws://127.0.0.1:{room(scenario).ports.websocket}"))
    assert value(text, "trueconf_scrape_method_success", method="getSystemInfo") == 1
    assert identities(text) == []
