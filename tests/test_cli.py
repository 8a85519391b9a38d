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
from exporter.emulator.faults import Fault
from exporter.emulator.fleet import ROOMS
from exporter.room.client import OUTGOING_METHOD
from tests.exposition import value
from tests.processes import LISTENING, Process, exporter_command, http_get, start, wait_for, wait_until

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
        (["serve", "--timeout", "soon"], "must be seconds (5, 2.5s, 500ms or 1m), found 'soon'"),
        (["serve", "--timeout", "0"], "must be between 0.05s and 600s, found 0s"),
        (["serve", "--timeout", "11m"], "must be between 0.05s and 600s, found 660s"),
        (["serve", "--room.session-idle-timeout", "500ms"], "must be at least 1s, found 0.5s"),
        (["serve", "--web.read-header-timeout", "-1s"], "must be seconds"),
        (["check", "--target", "fd00::1:8765"], "as [fd00::1]:8765, or [fd00::1:8765]:8765 if all"),
        (["check", "--pin", ""], "the value is empty; leave it out for a Room without a PIN"),
        (["check", "--pin-file", ""], "the value is empty; leave it out for a Room without a PIN"),
        (["serve", "--web.listen-address", "nowhere"], "HOST:PORT"),
        (["serve", "--no-such-flag"], "No such option"),
        (["serve", "--pin-file", "/nonexistent/pin"], "cannot read /nonexistent/pin"),
        (["check", "--pin", "1", "--pin-file", "/etc/hostname"], "mutually exclusive"),
        (["serve", "--log.level", "loud"], "Invalid value for '--log.level'"),
        (["serve", "--log-level", "loud"], "Invalid value for '--log.level' / '--log-level'"),
        (["serve", "--log-format", "xml"], "Invalid value for '--log.format' / '--log-format'"),
        (["emulate", "--scenario", "/nonexistent/scenario.json"], "cannot read the scenario file"),
        (["emulate", "--fault", "meltdown"], "Invalid value for '--fault'"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(args, message):
    result = run(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "TRUECONF_EXPORTER_PIN",
            "",
            "TRUECONF_EXPORTER_PIN is set but empty; unset it for a Room without a PIN",
        ),
        ("TRUECONF_EXPORTER_PIN", "  ", "TRUECONF_EXPORTER_PIN is set but empty"),
        ("TRUECONF_EXPORTER_PIN_FILE", "", "TRUECONF_EXPORTER_PIN_FILE is set but empty"),
        (
            "TRUECONF_EXPORTER_TARGET",
            "",
            "TRUECONF_EXPORTER_TARGET is set but empty; unset it for its default",
        ),
        ("TRUECONF_EXPORTER_TIMEOUT", "", "TRUECONF_EXPORTER_TIMEOUT is set but empty"),
        ("TRUECONF_EXPORTER_TIMEOUT", "5 s s", "must be seconds (5, 2.5s, 500ms or 1m), found '5 s s'"),
        ("TRUECONF_EXPORTER_TIMEOUT", "700", "must be between 0.05s and 600s, found 700s"),
    ],
)
def test_an_empty_or_bad_variable_is_refused_as_the_flag_is(variable, value, message):
    """An empty variable once meant "not set" (an empty TRUECONF_EXPORTER_PIN: no PIN) where the empty flag
    was refused; both are refused now, in one line."""
    target = [] if variable == "TRUECONF_EXPORTER_TARGET" else ["--target", "127.0.0.1:1"]
    result = run("check", *target, env={variable: value})
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr


def test_duration_flags_and_variables_take_every_form(processes):
    """`--timeout 5s` was refused while the config file took `5s`: every form works on both now."""
    room = processes["emulator"]("--scenario", "doc-example")
    target = f"127.0.0.1:{room.ports['websocket']}"
    for duration in ("2500ms", "2.5s", "2.5", "0.05m", ".5s", "3"):
        by_flag = run("check", "--target", target, "--timeout", duration)
        by_variable = run("check", "--target", target, env={"TRUECONF_EXPORTER_TIMEOUT": duration})
        for result in (by_flag, by_variable):
            assert result.returncode == 0, (duration, result.stderr)
            assert result.stdout.splitlines()[-1].startswith("Room answered: ")
    exporter = processes["exporter"](
        "--target",
        target,
        "--timeout",
        "1500ms",
        "--web.read-header-timeout",
        "1m",
        env={"TRUECONF_EXPORTER_ROOM_SESSION_IDLE_TIMEOUT": "2m"},
    )
    text = http_get(f"http://127.0.0.1:{exporter.ports['http']}/metrics")[2].decode()
    assert value(text, "trueconf_up") == 1


def test_a_pin_file_others_can_read_draws_one_warning_and_never_the_pin(processes, tmp_path):
    pin_file = tmp_path / "room-pin"
    pin_file.write_text("97531\n")
    room = processes["emulator"]("--scenario", "doc-example", "--pin-file", str(pin_file))
    target = f"127.0.0.1:{room.ports['websocket']}"
    for mode, group, expected in [
        (0o644, None, f"PIN file {pin_file} is readable by others (mode 0644); chmod 600 it"),
        (0o640, 65534, f"PIN file {pin_file} is readable by group 65534 (mode 0640); chmod 600 it"),
        (0o600, 65534, None),
        (0o640, os.getgid(), None),  # the exporter's own group: a Kubernetes Secret with fsGroup, 0440
    ]:
        pin_file.chmod(mode)
        if group is not None:
            os.chown(pin_file, -1, group)
        result = run("check", "--target", target, "--pin-file", str(pin_file))
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if "PIN file" in line]
        assert warnings == ([] if expected is None else [warnings[0]]), result.stderr
        if expected is not None:
            assert expected in warnings[0] and "level=warning" in warnings[0]
        assert "97531" not in result.stdout + result.stderr


def test_a_module_pin_file_others_can_read_is_warned_about_at_start(processes, tmp_path):
    pin_file = tmp_path / "boardroom-pin"
    pin_file.write_text("86420")
    pin_file.chmod(0o604)
    config = tmp_path / "config.yml"
    config.write_text(f"modules:\n  default:\n    pin_file: {pin_file.name}\n")
    exporter = processes["exporter"]("--config.file", str(config))
    wait_for(
        exporter, "stderr", r"PIN file \S*boardroom-pin is readable by others \(mode 0604\); chmod 600 it"
    )
    assert "86420" not in exporter.stderr


def test_pin_on_the_command_line_draws_a_warning_the_variable_does_not(processes):
    room = processes["emulator"]("--scenario", "doc-example")
    target = f"127.0.0.1:{room.ports['websocket']}"
    flag = run("check", "--target", target, "--pin", "13579")
    variable = run("check", "--target", target, env={"TRUECONF_EXPORTER_PIN": "13579"})
    assert flag.returncode == variable.returncode == 0, flag.stderr + variable.stderr
    [warning] = [line for line in flag.stderr.splitlines() if "--pin is on the command line" in line]
    assert "every user of this machine can read it" in warning and "level=warning" in warning
    assert "--pin is on the command line" not in variable.stderr
    assert "13579" not in flag.stdout + flag.stderr + variable.stdout + variable.stderr


def test_a_websocket_port_given_as_http_is_named_the_websocket_port(processes):
    room = processes["emulator"]("--scenario", "doc-example")
    port = room.ports["websocket"]
    result = run("check", "--target", f"http://127.0.0.1:{port}", "--timeout", "2s")
    assert result.returncode == 1
    verdict = result.stdout.splitlines()[-1]
    assert (
        f"port {port} is the WebSocket port, not the web UI's: write the target as ws://127.0.0.1:{port}"
        in (verdict)
    )


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


def start_demo(tmp_path: Path) -> tuple[Process, int]:
    """`demo` on a free run of Room ports and a free HTTP port: the process and its first Room port."""
    first = free_port_run(len(ROOMS))
    demo = start(
        ["demo", "--web.listen-address", "127.0.0.1:0", "--rooms.first-port", str(first)],
        tmp_path,
        name="demo",
    )
    return demo, first


def test_demo_runs_a_fleet_whose_rooms_each_live_their_life(tmp_path):
    demo, first = start_demo(tmp_path)
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
        for room in ROOMS:
            assert f"127.0.0.1:{room.port(first)}" in page, room.name
    finally:
        assert demo.stop() == 0


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_demo_probes_its_rooms_at_once_without_anyone_asking_and_stops(tmp_path, stop):
    """Its own prober reads every Room through /probe at start (then every 15 s): a session per Room that
    answers, though nobody asked /probe; Ctrl-C or SIGTERM then ends it, exit 0, within a few seconds."""
    demo, _ = start_demo(tmp_path)
    try:
        port = int(wait_for(demo, "stderr", LISTENING).group(1))
        assert "every 15 s" in wait_for(demo, "stdout", "make demo-stack").string
        listening = sum(room.listening for room in ROOMS)

        def probed() -> bool:
            text = http_get(f"http://127.0.0.1:{port}/metrics")[2].decode()
            return value(text, "trueconf_exporter_room_logins_total") == listening

        assert wait_until(probed, 10), demo.stderr[-3000:]
        assert value(
            http_get(f"http://127.0.0.1:{port}/metrics")[2].decode(), "trueconf_exporter_room_sessions"
        )
        started = time.monotonic()
        demo.popen.send_signal(stop)
        assert demo.popen.wait(timeout=10) == 0, demo.stderr[-3000:]
        assert time.monotonic() - started < 5
        assert "Traceback" not in demo.stderr, demo.stderr[-3000:]
        assert "never retrieved" not in demo.stderr, demo.stderr[-3000:]
    finally:
        demo.stop()


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
    # README: a job's `params: {module: ...}` overrides every Room's __param_module in Prometheus 2.42
    probe_jobs = [job for job in jobs.values() if job.get("metrics_path") == "/probe"]
    assert probe_jobs and all("params" not in job for job in probe_jobs)


def test_sighup_without_a_config_file_is_logged_and_ignored(processes):
    """systemd's `Restart=on-failure` does not restart a process a signal ended: SIGHUP must not end it."""
    room = processes["emulator"]("--scenario", "doc-example")
    exporter = processes["exporter"]("--target", f"ws://127.0.0.1:{room.ports['websocket']}")
    exporter.popen.send_signal(signal.SIGHUP)
    wait_for(exporter, "stderr", "SIGHUP ignored")
    status, _, body = http_get(f"http://127.0.0.1:{exporter.ports['http']}/metrics")
    assert status == 200 and value(body.decode(), "trueconf_up") == 1
    assert exporter.alive()


def test_sigterm_lets_a_scrape_in_progress_finish(processes, room):
    """A rolling restart must not cut the scrape that is waiting on a slow Room (emulated in this process,
    so the test sees the scrape's request arrive)."""
    emulator = room("doc-example", fault=Fault.SLOW_REPLY, slow_reply_seconds=1.5)
    exporter = processes["exporter"](
        "--target", f"ws://127.0.0.1:{emulator.ports.websocket}", "--timeout", "5"
    )
    answer: list[tuple[int, dict[str, str], bytes]] = []
    scrape = threading.Thread(
        target=lambda: answer.append(http_get(f"http://127.0.0.1:{exporter.ports['http']}/metrics"))
    )
    scrape.start()
    assert wait_until(lambda: emulator.requests[OUTGOING_METHOD] == 1, 10), "the scrape reached the Room"
    exporter.popen.send_signal(signal.SIGTERM)
    scrape.join(10)
    assert answer, "the scrape got an answer"
    status, _, body = answer[0]
    assert status == 200 and value(body.decode(), "trueconf_up") == 1
    assert exporter.popen.wait(10) == 0
