"""The last-resort path: a bug inside the exporter is the Room's `trueconf_up 0` with reason `internal`, an
HTTP 200, and one error-level log line with the traceback, never an HTTP 500 or a bare traceback on stderr.

Failures are injected for real: in-process by replacing one function, and in a real `serve` process through a
`sitecustomize` module on its PYTHONPATH, which Python imports before anything else.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from exporter.collect import collection as collection_module
from exporter.collect import families as families_module
from exporter.collect.collection import collect_room
from exporter.logs import JsonFormatter, LogfmtFormatter
from exporter.room import Reason, parse_target
from exporter.room.request import RoomRequest
from exporter.web import app as app_module
from exporter.web.app import ExporterApp
from exporter.web.settings import ExporterSettings
from tests.exposition import names, samples, value
from tests.processes import http_get

INJECTED = "injected failure for the last-resort test"


def explode(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError(INJECTED)


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


def assert_internal_failure(text: str) -> None:
    """`trueconf_up 0`, reason `internal` 1 and all six reasons present, no request gauges (the Room's
    transfer counters may stay: they are the ledger's, not this scrape's)."""
    assert value(text, "trueconf_up") == 0
    reasons = {
        dict(labels)["reason"]: v
        for (name, labels), v in samples(text).items()
        if name == "trueconf_scrape_error"
    }
    assert reasons == {reason.value: int(reason is Reason.INTERNAL) for reason in Reason}
    assert len(Reason) == 6
    gauges = [name for name in names(text) if not name.endswith("_total")]
    assert not [name for name in gauges if name.startswith("trueconf_outgoing_file_requests")]


@pytest.fixture
def exporter_for(room, serve_app):
    """An in-process exporter reading the doc-example Room; returns its base URL."""

    def start() -> str:
        emulator = room("doc-example")
        settings = ExporterSettings(parse_target(f"ws://127.0.0.1:{emulator.ports.websocket}"), None, 5.0)
        return serve_app(ExporterApp(settings))

    return start


def test_a_bug_while_collecting_is_reason_internal_and_one_error_line(room, monkeypatch, caplog):
    monkeypatch.setattr(collection_module, "parse_room", explode)
    emulator = room("doc-example")
    with caplog.at_level(logging.WARNING):
        collection = collect_room(
            RoomRequest(parse_target(f"ws://127.0.0.1:{emulator.ports.websocket}"), None), 5.0
        )
    assert not collection.up
    assert collection.error is not None and collection.error.reason is Reason.INTERNAL
    assert INJECTED not in collection.error.message, "the metric detail stays generic; the log has the cause"
    [record] = caplog.records  # one line, at error level, and no second "collection failed" warning
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and INJECTED in str(record.exc_info[1])


def test_a_bug_while_building_metrics_is_reason_internal_with_http_200(exporter_for, monkeypatch, caplog):
    monkeypatch.setattr(families_module, "snapshot_metrics", explode)
    url = exporter_for()
    with caplog.at_level(logging.WARNING):
        status, _, body = http_get(f"{url}/metrics")
    assert status == 200
    assert_internal_failure(body.decode())
    [record] = error_records(caplog)
    assert record.exc_info is not None


@pytest.mark.parametrize("formatter", [LogfmtFormatter(), JsonFormatter()], ids=["logfmt", "json"])
def test_the_error_line_carries_the_traceback_on_one_line(formatter, room, monkeypatch, caplog):
    monkeypatch.setattr(collection_module, "parse_room", explode)
    emulator = room("doc-example")
    with caplog.at_level(logging.ERROR):
        collect_room(RoomRequest(parse_target(f"ws://127.0.0.1:{emulator.ports.websocket}"), None), 5.0)
    [record] = caplog.records
    line = formatter.format(record)
    assert "\n" not in line
    if isinstance(formatter, JsonFormatter):
        fields = json.loads(line)
        assert fields["level"] == "error"
        assert fields["reason"] == "internal"
        assert fields["traceback"].startswith("Traceback (most recent call last)")
        assert f"RuntimeError: {INJECTED}" in fields["traceback"]
    else:
        assert line.startswith("ts=") and " level=error " in line
        assert "traceback=" in line and INJECTED in line


def test_the_servers_own_error_path_logs_through_the_project_logger(exporter_for, monkeypatch, caplog, capfd):
    """A route that fails outside any collection: wsgiref answers 500 and its traceback goes to our log."""
    monkeypatch.setattr(app_module, "landing_page", explode)
    url = exporter_for()
    with caplog.at_level(logging.ERROR):
        status, _, _ = http_get(f"{url}/")
    assert status == 500
    [record] = error_records(caplog)
    assert INJECTED in record.traceback  # type: ignore[attr-defined]
    assert "Traceback" not in capfd.readouterr().err


SITECUSTOMIZE = f"""
import exporter.collect.collection as collection

def explode(*args, **kwargs):
    raise RuntimeError({INJECTED!r})

collection.parse_room = explode
"""


@pytest.mark.process
@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_a_real_serve_process_answers_200_and_logs_one_line(processes, tmp_path: Path, log_format):
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    room = processes["emulator"]("--scenario", "doc-example")
    exporter = processes["exporter"](
        "--target",
        f"ws://127.0.0.1:{room.ports['websocket']}",
        "--log.format",
        log_format,
        env={"PYTHONPATH": str(tmp_path / "inject")},
    )
    status, _, body = http_get(f"http://127.0.0.1:{exporter.ports['http']}/metrics")
    assert status == 200
    assert_internal_failure(body.decode())
    assert exporter.alive()
    lines = exporter.stderr.splitlines()
    errors = [line for line in lines if "error" in line and INJECTED in line]
    assert len(errors) == 1, exporter.stderr
    assert all(line.startswith(("ts=", "{")) for line in lines), "every stderr line is a structured log line"
