"""`/probe` over real sockets: modules, the allow-list, bad requests, reloads, 50 Rooms at once."""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

from exporter.emulator.faults import Fault
from exporter.emulator.scenario import Scenario
from exporter.fleet.config import ConfigError, ExporterConfig, parse_config
from exporter.fleet.probe import ProbeRefusedError, parse_query, resolve_probe
from exporter.fleet.reload import ConfigHolder
from exporter.room import RoomTarget, parse_target
from exporter.room.connect import CheckedTarget, Resolver
from exporter.web.app import ExporterApp
from exporter.web.server import make_http_server
from exporter.web.settings import ExporterSettings
from tests.exposition import names, samples, value
from tests.processes import http_get, wait_until

ROOM_PIN = "62830415"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def fleet_exporter(tmp_path, serve_app):
    """Serve ExporterApp in multi-target mode for a config text; returns (base URL, ConfigHolder)."""

    def start(config_text: str) -> tuple[str, ConfigHolder]:
        (tmp_path / "pin").write_text(ROOM_PIN)
        holder = ConfigHolder(write_config(tmp_path / "config.yml", config_text), default_timeout=5.0)
        settings = ExporterSettings(parse_target("ws://127.0.0.1:1"), None, 5.0)
        return serve_app(ExporterApp(settings, holder)), holder

    return start


CONFIG = """
modules:
  default:
    pin_file: pin
  open: {}
  quick:
    timeout: 1s
allowed_targets: ["127.0.0.1", "localhost"]
"""


def probe(base: str, target: str, module: str | None = None, **headers: str) -> tuple[int, str]:
    query = f"target={quote(target)}" + (f"&module={quote(module)}" if module is not None else "")
    status, _, body = http_get(f"{base}/probe?{query}", headers)
    return status, body.decode()


def test_probe_collects_the_room_with_the_modules_credentials(room, fleet_exporter):
    base, _ = fleet_exporter(CONFIG)
    secured = room("doc-example", pin=ROOM_PIN).ports.websocket
    status, text = probe(base, f"127.0.0.1:{secured}")  # no module: "default"
    assert status == 200
    assert value(text, "trueconf_up") == 1
    assert value(text, "trueconf_outgoing_file_requests", status="downloading", destination="peer") == 1
    assert "trueconf_exporter_build_info" not in names(text)  # the exporter's own metrics stay on /metrics
    status, text = probe(base, f"ws://127.0.0.1:{secured}", "open")
    assert status == 200 and value(text, "trueconf_scrape_error", reason="auth") == 1


def test_probe_with_discovery_off_and_on(room, tmp_path, fleet_exporter):
    base, _ = fleet_exporter(CONFIG.replace("  open: {}", "  open: {}\n  discover:\n    discovery: true"))
    ports = room("doc-example").ports
    assert value(probe(base, f"127.0.0.1:{ports.web}", "discover")[1], "trueconf_up") == 1
    assert value(probe(base, f"127.0.0.1:{ports.websocket}", "open")[1], "trueconf_up") == 1


def test_metrics_carries_only_the_exporters_own_metrics_in_multi_target_mode(fleet_exporter):
    base, _ = fleet_exporter(CONFIG)
    status, _, body = http_get(f"{base}/metrics")
    assert status == 200
    found = names(body.decode())
    assert "trueconf_exporter_build_info" in found
    assert "trueconf_exporter_config_last_reload_successful" in found
    assert "trueconf_up" not in found


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("", 400, "missing parameter 'target'"),
        ("module=open", 400, "missing parameter 'target'"),
        ("target=", 400, "missing parameter 'target'"),
        ("target=127.0.0.1&target=localhost", 400, "give 'target' once"),
        ("target=127.0.0.1&module=nope", 400, "unknown module 'nope'; the config has: default, open, quick"),
        ("target=127.0.0.1&module=a&module=b", 400, "give 'module' once"),
        ("target=ftp://127.0.0.1", 400, "bad target: \"unsupported scheme 'ftp'"),
        ("target=127.0.0.1:8765/x", 400, "has a path"),
        ("target=127.0.0.1%0a.evil", 400, "control characters"),
        ("target=10.1.2.3:8765", 403, "target 'ws://10.1.2.3:8765' is not in allowed_targets"),
    ],
)
def test_bad_probes_get_a_one_line_reason(fleet_exporter, query, status, message):
    """A name target is looked up before its 403 when the list has IP entries, so names are tested where
    no lookup can reach a real resolver: test_allow_list.py and test_name_lookup.py."""
    base, _ = fleet_exporter(CONFIG)
    got_status, headers, body = http_get(f"{base}/probe?{query}")
    assert got_status == status
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert message in text and text.count("\n") == 1, text


def test_a_target_outside_the_allow_list_is_never_contacted(fleet_exporter):
    """A listener on 127.0.0.2 (outside the list) must see no connection at all."""
    listener = socket.create_server(("127.0.0.2", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    base, _ = fleet_exporter(CONFIG)
    assert probe(base, f"127.0.0.2:{port}")[0] == 403
    assert probe(base, f"http://127.0.0.2:{port}", "open")[0] == 403
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()


def test_without_a_config_file_probe_is_not_served(room):
    settings = ExporterSettings(
        parse_target(f"ws://127.0.0.1:{room('doc-example').ports.websocket}"), None, 5.0
    )
    server = make_http_server(ExporterApp(settings), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        status, _, body = http_get(f"{base}/probe?target=127.0.0.1")
        assert status == 404 and b"--config.file" in body
        # /metrics is the unchanged single-target mode
        assert value(http_get(f"{base}/metrics")[2].decode(), "trueconf_up") == 1
    finally:
        server.shutdown()
        server.server_close()


def test_the_scrape_timeout_header_shortens_a_probe(room, fleet_exporter):
    base, _ = fleet_exporter(CONFIG.replace("timeout: 1s", "timeout: 20s"))
    silent = room("doc-example", fault=Fault.SILENT).ports.websocket
    started = time.monotonic()
    status, text = probe(
        base, f"127.0.0.1:{silent}", "quick", **{"X-Prometheus-Scrape-Timeout-Seconds": "1.5"}
    )
    assert time.monotonic() - started < 2.5
    assert status == 200 and value(text, "trueconf_scrape_error", reason="timeout") == 1


def test_reload_over_http_and_keeping_the_old_config_when_the_new_one_is_broken(
    room, fleet_exporter, tmp_path
):
    base, holder = fleet_exporter(CONFIG)
    port = room("doc-example").ports.websocket
    assert http_get(f"{base}/-/reload")[0] == 405  # GET does not reload
    (tmp_path / "config.yml").write_text(CONFIG.replace("  open: {}", "  open: {}\n  added: {}"))
    status, _, body = post(f"{base}/-/reload")
    assert (status, body) == (200, b"config reloaded\n")
    assert value(probe(base, f"127.0.0.1:{port}", "added")[1], "trueconf_up") == 1

    (tmp_path / "config.yml").write_text("modules:\n  added:\n    timeout: never\n")
    status, _, body = post(f"{base}/-/reload")
    assert status == 500
    assert b"config.yml: modules.added.timeout: must be seconds" in body
    assert probe(base, f"127.0.0.1:{port}", "open")[0] == 200  # the old config is still in force
    metrics = http_get(f"{base}/metrics")[2].decode()
    assert value(metrics, "trueconf_exporter_config_last_reload_successful") == 0
    assert holder.config.modules.keys() == {"default", "open", "quick", "added"}


def post(url: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=b"", method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def fleet_scenario(index: int) -> Scenario:
    """Room `index` lists index+1 requests waiting for the recipient, so each answer is recognisable."""
    entries = [
        {
            "fileRequestId": f"r{index}-{n}",
            "fileName": "x.pdf",
            "status": 1,
            "size": 1000 + index,
            "timestamp": 1700000000,
            "peerId": "p@s",
            "peerDn": "p",
        }
        for n in range(index + 1)
    ]
    return Scenario(entries=entries, notifications_before_reply=3)


def test_fifty_rooms_probed_in_parallel_by_a_real_process(room, processes, tmp_path):
    """Every Room holds its reply back for 1s: 50 probes in series would take 50s, in parallel about 1s."""
    rooms = []
    for index in range(50):
        rooms.append(
            room(
                fleet_scenario(index),
                pin=ROOM_PIN if index % 2 else None,
                fault=Fault.SLOW_REPLY,
                slow_reply_seconds=1.0,
            )
        )
    (tmp_path / "pin").write_text(ROOM_PIN)
    config = write_config(
        tmp_path / "fleet.yml",
        "modules:\n  secured:\n    pin_file: pin\n    timeout: 8s\n"
        "  open:\n    timeout: 8s\nallowed_targets: [127.0.0.1]\n",
    )
    exporter = processes["exporter"]("--config.file", str(config))
    base = f"http://127.0.0.1:{exporter.ports['http']}"
    start_together = threading.Barrier(50)

    def probe_room(index: int) -> tuple[int, str, float]:
        start_together.wait()
        started = time.monotonic()
        status, text = probe(
            base, f"127.0.0.1:{rooms[index].ports.websocket}", "secured" if index % 2 else "open"
        )
        return status, text, time.monotonic() - started

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(probe_room, range(50)))
    elapsed = time.monotonic() - started

    for index, (status, text, _) in enumerate(answers):
        assert status == 200, (index, text)
        assert value(text, "trueconf_up") == 1, (index, text)
        by_name = samples(text)
        waiting = sum(
            v
            for (n, labels), v in by_name.items()
            if n == "trueconf_outgoing_file_requests" and ("status", "waiting") in labels
        )
        size = sum(v for (n, _), v in by_name.items() if n == "trueconf_outgoing_file_requests_size_bytes")
        assert waiting == index + 1, (index, text)
        assert size == (index + 1) * (1000 + index)
    assert elapsed < 8, f"50 probes of 1s Rooms took {elapsed:.1f}s: they waited for each other"
    assert max(a[2] for a in answers) < 8


def test_a_hung_room_does_not_hold_up_the_others(room, fleet_exporter):
    base, _ = fleet_exporter(CONFIG.replace("timeout: 1s", "timeout: 3s"))
    hung = room("doc-example", fault=Fault.SILENT)
    fine = room("doc-example").ports.websocket
    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(probe, base, f"127.0.0.1:{hung.ports.websocket}", "quick")
        assert wait_until(lambda: hung.open_connections == 1, 2), "the hung Room's probe is under way"
        started = time.monotonic()
        _, text = probe(base, f"127.0.0.1:{fine}", "open")
        assert time.monotonic() - started < 2
        assert value(text, "trueconf_up") == 1
        assert value(slow.result()[1], "trueconf_scrape_error", reason="timeout") == 1


def test_sighup_reloads_a_running_process(processes, room, tmp_path):
    port = room("doc-example").ports.websocket
    config = write_config(tmp_path / "c.yml", "modules:\n  first: {}\nallowed_targets: [127.0.0.1]\n")
    exporter = processes["exporter"]("--config.file", str(config))
    base = f"http://127.0.0.1:{exporter.ports['http']}"
    assert probe(base, f"127.0.0.1:{port}", "second")[0] == 400

    config.write_text("modules:\n  second: {}\nallowed_targets: [127.0.0.1]\n")
    exporter.popen.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while probe(base, f"127.0.0.1:{port}", "second")[0] != 200:
        assert time.monotonic() < deadline, exporter.stderr
        time.sleep(0.05)  # the poll interval of this bounded wait

    config.write_text("modules: [broken\n")
    exporter.popen.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "config reload failed" not in exporter.stderr:
        assert time.monotonic() < deadline, exporter.stderr
        time.sleep(0.05)  # the poll interval of this bounded wait
    assert probe(base, f"127.0.0.1:{port}", "second")[0] == 200
    assert exporter.alive()


BOARDROOM_PIN = "73019468"
TWO_PINS_ONE_LIST_CONFIG = """
modules:
  default:
    pin_file: pin
  boardrooms:
    pin_file: boardroom-pin
allowed_targets: ["127.0.0.0/8"]
"""
"""Two PINs, one fleet-wide list."""


def scoped_config(room_port: int, boardroom_port: int) -> str:
    """That config with each PIN module scoped to its own Room."""
    return TWO_PINS_ONE_LIST_CONFIG.replace(
        "    pin_file: pin\n", f"    pin_file: pin\n    allowed_targets: ['127.0.0.1:{room_port}']\n"
    ).replace(
        "    pin_file: boardroom-pin\n",
        f"    pin_file: boardroom-pin\n    allowed_targets: ['127.0.0.1:{boardroom_port}']\n",
    )


def test_a_modules_pin_never_reaches_a_room_outside_its_own_list(room, fleet_exporter, tmp_path):
    """/probe?target=ROOM&module=boardrooms for a Room meant for `default` never sends it the boardroom PIN:
    it is a 403 naming the module, and that Room sees no connection, let alone an `auth`."""
    (tmp_path / "boardroom-pin").write_text(BOARDROOM_PIN)
    meeting_room = room("doc-example", pin=ROOM_PIN)
    boardroom = room("doc-example", pin=BOARDROOM_PIN)
    base, _ = fleet_exporter(scoped_config(meeting_room.ports.websocket, boardroom.ports.websocket))
    assert value(probe(base, f"127.0.0.1:{meeting_room.ports.websocket}")[1], "trueconf_up") == 1
    assert value(probe(base, f"127.0.0.1:{boardroom.ports.websocket}", "boardrooms")[1], "trueconf_up") == 1
    assert (meeting_room.logins, boardroom.logins) == (1, 1)

    for target, module, other in (
        (meeting_room, "boardrooms", "boardrooms"),
        (boardroom, None, "default"),  # no module: `default`, scoped just the same
        (boardroom, "default", "default"),
    ):
        connections = len(target.room.records)
        for written in (f"127.0.0.1:{target.ports.websocket}", f"ws://127.0.0.1:{target.ports.websocket}"):
            status, text = probe(base, written, module)
            assert status == 403, text
            assert text == (
                f"target 'ws://127.0.0.1:{target.ports.websocket}' is not in the allowed_targets "
                f"of module '{other}'\n"
            )
        assert len(target.room.records) == connections  # not even a connection
    assert (meeting_room.logins, boardroom.logins) == (1, 1)  # each Room only ever got its own PIN


def test_the_issue_15_config_is_refused_before_any_pin_is_sent(room, fleet_exporter, tmp_path):
    """Unscoped, the same config is refused at start-up (ConfigHolder is what `serve` starts with), so no
    probe can send the boardroom PIN anywhere; on 0.1 it loaded, and the meeting Room got a wrong `auth`."""
    (tmp_path / "boardroom-pin").write_text(BOARDROOM_PIN)
    meeting_room = room("doc-example", pin=ROOM_PIN)
    with pytest.raises(ConfigError) as caught:
        base, _ = fleet_exporter(TWO_PINS_ONE_LIST_CONFIG)
        probe(base, f"127.0.0.1:{meeting_room.ports.websocket}", "boardrooms")
    assert "modules.default.allowed_targets: missing" in str(caught.value)
    assert "add it to default, boardrooms" in str(caught.value)
    assert meeting_room.logins == 0 and meeting_room.room.records == []


def test_a_reload_that_drops_the_scopes_keeps_the_scoped_config(room, fleet_exporter, tmp_path):
    (tmp_path / "boardroom-pin").write_text(BOARDROOM_PIN)
    meeting_room = room("doc-example", pin=ROOM_PIN)
    base, holder = fleet_exporter(scoped_config(meeting_room.ports.websocket, 1))
    (tmp_path / "config.yml").write_text(TWO_PINS_ONE_LIST_CONFIG)
    status, _, body = post(f"{base}/-/reload")
    assert status == 500 and b"modules.default.allowed_targets: missing" in body
    assert holder.config.modules["boardrooms"].allow_list is not None  # the scoped config stays in force
    assert probe(base, f"127.0.0.1:{meeting_room.ports.websocket}", "boardrooms")[0] == 403
    assert meeting_room.logins == 0


def scoped(top: list[str] | None, module: list[str]) -> ExporterConfig:
    document: dict[str, object] = {"modules": {"default": {"allowed_targets": module}}}
    if top is not None:
        document["allowed_targets"] = top
    return parse_config(document, "config.yml", default_timeout=5.0)


def resolve(config: ExporterConfig, target: str) -> RoomTarget:
    return resolve_probe(config, parse_query(f"target={quote(target)}"), Resolver())[1]


@pytest.mark.parametrize(
    ("top", "module"),
    [
        (["room-*.example.org"], ["10.20.30.0/24"]),  # the fleet by name, the module by address
        (["10.20.30.0/24"], ["room-*.example.org", "192.0.2.0/24"]),  # the other way round
        (["10.0.0.0/8"], ["10.20.30.0/24"]),  # both by address: one lookup serves both
        (None, ["10.20.30.0/24"]),  # the module's list alone
    ],
)
def test_a_name_is_looked_up_once_and_its_addresses_checked_against_every_list_needing_them(dns, top, module):
    fake = dns(
        {
            "room-1.example.org": [["10.20.30.4"]],
            "room-2.example.org": [["10.20.30.4", "10.99.0.1"]],
            "room-3.example.org": [["192.0.2.7"]],
        }
    )
    config = scoped(top, module)
    target = resolve(config, "room-1.example.org")
    assert isinstance(target, CheckedTarget)  # connects to exactly the addresses checked
    assert [str(a) for a in target.lookup.addresses] == ["10.20.30.4"]
    for name in ("room-2.example.org", "room-3.example.org"):
        with pytest.raises(ProbeRefusedError) as caught:
            resolve(config, name)
        assert caught.value.status == "403 Forbidden"
        assert "and neither are all its addresses" in caught.value.reason
        assert "10.99" not in caught.value.reason and "192.0.2" not in caught.value.reason
    assert fake.calls == Counter({"room-1.example.org": 1, "room-2.example.org": 1, "room-3.example.org": 1})


def test_a_name_both_lists_allow_by_pattern_is_left_to_its_collection(dns):
    fake = dns({})
    config = scoped(["**.example.org", "10.0.0.0/8"], ["room-*.example.org"])
    assert not isinstance(resolve(config, "room-1.example.org"), CheckedTarget)
    with pytest.raises(ProbeRefusedError) as caught:  # no IP entry in the module's list: nothing to look up
        resolve(config, "lobby.example.org")
    assert caught.value.reason == (
        "target 'ws://lobby.example.org:8765' is not in the allowed_targets of module 'default'"
    )
    assert fake.calls == Counter()
