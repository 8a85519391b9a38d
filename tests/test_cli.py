"""The command line as a user runs it: real processes, real HTTP, exit codes and messages."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from exporter.cli.demo import DEMO_LISTEN_ADDRESS
from exporter.emulator.fleet import ROOMS
from tests.exposition import value
from tests.processes import LISTENING, exporter_command, http_get, start, wait_for

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        exporter_command() + list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.smoke
def test_serve_is_scraped_over_http(processes):
    room = processes["emulator"]("--scenario", "doc-example")
    exporter = processes["exporter"]("--target", f"ws://127.0.0.1:{room.ports['websocket']}")
    status, _, body = http_get(f"http://127.0.0.1:{exporter.ports['http']}/metrics")
    text = body.decode()
    assert status == 200
    assert value(text, "trueconf_up") == 1
    assert value(text, "trueconf_outgoing_file_requests", status="downloading", destination="conference") == 1
    assert exporter.alive()


def test_serve_reads_its_settings_from_environment_variables(processes, tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text("24680\n")
    room = processes["emulator"]("--scenario", "doc-example", "--pin-file", str(pin_file))
    exporter = processes["exporter"](
        env={
            "TRUECONF_EXPORTER_TARGET": f"http://127.0.0.1:{room.ports['web']}",
            "TRUECONF_EXPORTER_PIN_FILE": str(pin_file),
            "TRUECONF_EXPORTER_TIMEOUT": "2.5",
        }
    )
    text = http_get(f"http://127.0.0.1:{exporter.ports['http']}/metrics")[2].decode()
    assert value(text, "trueconf_up") == 1


def test_serve_stops_cleanly_on_sigterm(processes):
    exporter = processes["exporter"]("--target", "127.0.0.1:1")
    assert exporter.stop() == 0
    assert "Traceback" not in exporter.stderr


def test_check_exits_0_with_a_verdict_when_the_room_answers(processes):
    room = processes["emulator"]("--scenario", "doc-example")
    result = run("check", "--target", f"127.0.0.1:{room.ports['websocket']}")
    assert result.returncode == 0, result.stderr
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.startswith("Room answered: 2 outgoing requests, 2 pending, oldest downloading ")
    assert value(result.stdout.rsplit("\n", 2)[0], "trueconf_up") == 1


def test_check_exits_1_with_the_reason_and_a_hint_when_it_does_not(processes):
    result = run("check", "--target", "127.0.0.1:1", "--timeout", "2")
    assert result.returncode == 1
    assert "Room did not answer (connect)" in result.stdout
    assert "Try:" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_check_with_a_wrong_pin_says_auth(processes, tmp_path):
    (tmp_path / "room-pin").write_text("1111")
    (tmp_path / "our-pin").write_text("2222")
    room = processes["emulator"]("--scenario", "doc-example", "--pin-file", str(tmp_path / "room-pin"))
    result = run(
        "check", "--target", f"127.0.0.1:{room.ports['websocket']}", "--pin-file", str(tmp_path / "our-pin")
    )
    assert result.returncode == 1
    assert "Room did not answer (auth)" in result.stdout
    assert "2222" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--target", "ftp://room"], "unsupported scheme"),
        (["serve", "--target", "ws://room:99999"], "bad port"),
        (["check", "--target", "::1"], "write it in brackets, as [::1]:8765"),
        (["serve", "--target", "ws://room:8765/api"], "has a path"),
        (["serve", "--target", ""], "empty"),
        (["serve", "--timeout", "soon"], "not a valid float"),
        (["serve", "--timeout", "0"], "0.05<=x<=600"),
        (["serve", "--web.listen-address", "nowhere"], "HOST:PORT"),
        (["serve", "--no-such-flag"], "No such option"),
        (["serve", "--pin-file", "/nonexistent/pin"], "cannot read /nonexistent/pin"),
        (["check", "--pin", "1", "--pin-file", "/etc/hostname"], "mutually exclusive"),
        (["serve", "--log-level", "loud"], "Invalid value for '--log-level'"),
        (["emulate", "--scenario", "/nonexistent/scenario.json"], "cannot read the scenario file"),
        (["emulate", "--fault", "meltdown"], "Invalid value for '--fault'"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(args, message):
    result = run(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_empty_pin_file_is_an_error(tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text("  \n")
    result = run("check", "--pin-file", str(pin_file))
    assert result.returncode == 2
    assert "is empty" in result.stderr


def test_a_broken_scenario_file_is_an_error(tmp_path):
    scenario = tmp_path / "broken.json"
    scenario.write_text('{"outgoingFilesRequests": [')
    result = run("emulate", "--scenario", str(scenario), "--port", "0", "--web-port", "0")
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr


def test_a_busy_listen_port_is_a_clear_error(processes):
    first = processes["exporter"]("--target", "127.0.0.1:1")
    result = run("serve", "--web.listen-address", f"127.0.0.1:{first.ports['http']}")
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_and_help():
    version = run("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("trueconf-exporter, version ")
    help_text = run("serve", "--help").stdout
    for variable in (
        "TRUECONF_EXPORTER_TARGET",
        "TRUECONF_EXPORTER_PIN_FILE",
        "TRUECONF_EXPORTER_TIMEOUT",
        "TRUECONF_EXPORTER_WEB_LISTEN_ADDRESS",
    ):
        assert variable in help_text


def free_port_run(count: int) -> int:
    """The first of `count` consecutive loopback ports that are free now."""
    for first in range(30000 + os.getpid() % 1000 * 20, 60000, 7):
        with contextlib.ExitStack() as sockets:
            try:
                for port in range(first, first + count):
                    sockets.enter_context(socket.create_server(("127.0.0.1", port)))
            except OSError:
                continue
            return first
    raise AssertionError("no free run of ports")


def test_demo_runs_a_fleet_whose_rooms_each_live_their_life(tmp_path):
    first = free_port_run(len(ROOMS))
    demo = start(
        ["demo", "--web.listen-address", "127.0.0.1:0", "--rooms.first-port", str(first)],
        tmp_path,
        name="demo",
    )
    try:
        port = int(wait_for(demo, "stderr", LISTENING).group(1))
        wait_for(demo, "stdout", "make demo-stack")
        assert f"status page  http://127.0.0.1:{port}/ " in demo.stdout
        expected = {"reception": None, "board-room": None, "training": None, "lobby": "connect"}
        expected |= {"old-room": None, "forbidden": None}
        for room in ROOMS:
            text = http_get(f"http://127.0.0.1:{port}/probe?target=127.0.0.1:{room.port(first)}")[2].decode()
            reason = expected[room.name]
            assert value(text, "trueconf_up") == (reason is None), room.name
            if reason is not None:
                assert value(text, "trueconf_scrape_error", reason=reason) == 1, room.name
        stuck = http_get(f"http://127.0.0.1:{port}/probe?target=127.0.0.1:{first + 1}")[2].decode()
        assert (
            value(stuck, "trueconf_outgoing_file_requests_oldest_pending_age_seconds", status="waiting")
            > 3600
        )
        page = http_get(f"http://127.0.0.1:{port}/")[2].decode()
        assert page.count("<h3>") == len(ROOMS)
    finally:
        assert demo.stop() == 0


def test_the_example_prometheus_config_scrapes_the_demo():
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    listed = {
        target: group.get("labels", {}).get("site")
        for group in jobs["trueconf-probe"]["static_configs"]
        for target in group["targets"]
    }
    assert listed == {f"127.0.0.1:{room.port()}": room.site for room in ROOMS}
    assert jobs["trueconf"]["static_configs"][0]["targets"] == [DEMO_LISTEN_ADDRESS]
    [to_exporter] = [
        r for r in jobs["trueconf-probe"]["relabel_configs"] if r["target_label"] == "__address__"
    ]
    assert to_exporter["replacement"] == DEMO_LISTEN_ADDRESS


def test_sighup_without_a_config_file_is_logged_and_ignored(processes):
    """systemd's `Restart=on-failure` does not restart a process a signal ended: SIGHUP must not end it."""
    room = processes["emulator"]("--scenario", "doc-example")
    exporter = processes["exporter"]("--target", f"ws://127.0.0.1:{room.ports['websocket']}")
    exporter.popen.send_signal(signal.SIGHUP)
    wait_for(exporter, "stderr", "SIGHUP ignored")
    status, _, body = http_get(f"http://127.0.0.1:{exporter.ports['http']}/metrics")
    assert status == 200 and value(body.decode(), "trueconf_up") == 1
    assert exporter.alive()


def test_sigterm_lets_a_scrape_in_progress_finish(processes):
    """A rolling restart must not cut the scrape that is waiting on a slow Room."""
    room = processes["emulator"](
        "--scenario", "doc-example", "--fault", "slow-reply", "--slow-reply-seconds", "1.5"
    )
    exporter = processes["exporter"](
        "--target", f"ws://127.0.0.1:{room.ports['websocket']}", "--timeout", "5"
    )
    answer: list[tuple[int, dict[str, str], bytes]] = []
    scrape = threading.Thread(
        target=lambda: answer.append(http_get(f"http://127.0.0.1:{exporter.ports['http']}/metrics"))
    )
    scrape.start()
    time.sleep(0.5)  # the scrape is now waiting for the Room's reply
    exporter.popen.send_signal(signal.SIGTERM)
    scrape.join(10)
    assert answer, "the scrape got an answer"
    status, _, body = answer[0]
    assert status == 200 and value(body.decode(), "trueconf_up") == 1
    assert exporter.popen.wait(10) == 0
