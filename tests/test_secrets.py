"""The PIN never leaves the exporter: not in a log line (debug level), a page, a metric or `check` output."""

from __future__ import annotations

import pytest

from tests.processes import http_get
from tests.test_cli import run

pytestmark = pytest.mark.process

ROOM_PIN = "73914682"
WRONG_PIN = "50283716"


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_the_pin_appears_nowhere(processes, tmp_path, log_format):
    room_pin, wrong_pin = tmp_path / "room-pin", tmp_path / "wrong-pin"
    room_pin.write_text(ROOM_PIN)
    wrong_pin.write_text(WRONG_PIN)
    room = processes["emulator"](
        "--scenario", "doc-example", "--pin-file", str(room_pin), "--log.level", "debug"
    )
    target = f"ws://127.0.0.1:{room.ports['websocket']}"
    common = ("--target", target, "--log.level", "debug", "--log.format", log_format)
    right = processes["exporter"](*common, "--pin-file", str(room_pin))
    wrong = processes["exporter"](*common, env={"TRUECONF_EXPORTER_PIN": WRONG_PIN})

    seen = []
    for exporter in (right, wrong):
        base = f"http://127.0.0.1:{exporter.ports['http']}"
        for path in ("/", "/metrics", "/healthz", "/nope"):
            seen.append(http_get(base + path)[2].decode())
    assert "trueconf_up 1.0" in seen[1]
    assert 'trueconf_scrape_error{reason="auth"} 1.0' in seen[5]
    for pin_file in (room_pin, wrong_pin):
        result = run("check", *common, "--pin-file", str(pin_file))
        seen += [result.stdout, result.stderr]
    for exporter in (right, wrong):
        exporter.stop()
        seen += [exporter.stdout, exporter.stderr]
    room.stop()
    seen += [room.stdout, room.stderr]

    everything = "\n".join(seen)
    assert "collection failed" in everything  # the wrong PIN was logged as a failure...
    assert "reason=auth" in everything or '"reason": "auth"' in everything
    assert ROOM_PIN not in everything  # ...without either PIN
    assert WRONG_PIN not in everything
