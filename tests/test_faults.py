"""The fault suite: whatever the Room does, a real exporter process keeps answering.

One exporter process reads one emulated Room for the whole module, while each test switches the Room's
behaviour at runtime (the emulator reads its settings at every connection). For every fault: the scrape
answers HTTP 200 within the deadline plus a margin, `trueconf_up` is 0 with the right reason, the process is
still alive, and the very next healthy scrape is correct. Fault scrapes send Prometheus's scrape-timeout
header, so their deadline is short while healthy scrapes keep the generous configured one.

Further down: the `--max-message-bytes` limit against hand-made frames and its memory cost, and a long run
during which the Room process freezes, dies and comes back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.collect.collection import collect_room
from exporter.emulator.faults import Fault
from exporter.emulator.scenario import Scenario, load_scenario
from exporter.emulator.server import EmulatedRoom, EmulatorSettings, RunningEmulator
from exporter.methods import OUTGOING_METHOD
from exporter.room import Deadline, Reason, parse_target
from exporter.room.budget import DEFAULT_MAX_MESSAGE_BYTES
from exporter.room.client import fetch_room
from exporter.room.errors import CollectionError
from exporter.room.file_requests import Snapshot
from exporter.room.request import RoomRequest
from tests import raw_servers
from tests.exposition import value
from tests.fault_reasons import FAULTS, TOLERATED
from tests.processes import Process, exporter_command, http_get, start_emulator, start_exporter, wait_until
from tests.raw_servers import frame, reply_of_size, websocket_room

pytestmark = pytest.mark.process

PIN = "1357"
FAULT_DEADLINE_SECONDS = 1.0
"""The collection deadline of a fault scrape (set through the scrape-timeout header)."""
MARGIN_SECONDS = 1.5
"""How far past its deadline a scrape may answer on a loaded 2-core machine: scheduling, not waiting."""
HEALTHY_TIMEOUT_SECONDS = 10.0
MiB = 1024 * 1024
HUGE_REPLY_BYTES = 64 * MiB


@dataclass
class Rig:
    """One emulated Room whose behaviour the tests switch, and the exporter processes that read it."""

    emulator: RunningEmulator
    settings: EmulatorSettings
    direct: Process
    discovering: Process

    def url(self, process: Process) -> str:
        return f"http://127.0.0.1:{process.ports['http']}/metrics"

    def restart_room(self) -> None:
        """A new emulator on the same ports, as a Room that was restarted."""
        assert self.emulator.ports is not None
        self.settings.websocket_port = self.emulator.ports.websocket
        self.settings.web_port = self.emulator.ports.web
        self.emulator = RunningEmulator(EmulatedRoom(self.settings, scenario=load_scenario("doc-example")))
        self.emulator.start()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("faults")
    settings = EmulatorSettings(
        websocket_port=0,
        web_port=0,
        pin=PIN,
        slow_reply_seconds=3 * FAULT_DEADLINE_SECONDS,
        huge_reply_bytes=HUGE_REPLY_BYTES,
    )
    emulator = RunningEmulator(EmulatedRoom(settings, scenario=load_scenario("doc-example")))
    ports = emulator.start()
    # A connection per scrape, so that every scrape meets the fault the emulator has now: a kept session would
    # go on past faults of the handshake and auth (tests/test_sessions.py covers sessions).
    env = {
        "TRUECONF_EXPORTER_PIN": PIN,
        "TRUECONF_EXPORTER_TIMEOUT": str(HEALTHY_TIMEOUT_SECONDS),
        "TRUECONF_EXPORTER_ROOM_SESSIONS": "false",
    }
    direct = start_exporter(workdir, "--target", f"ws://127.0.0.1:{ports.websocket}", env=env)
    discovering = start_exporter(workdir, "--target", f"http://127.0.0.1:{ports.web}", env=env)
    rig = Rig(emulator, settings, direct, discovering)
    try:
        yield rig
    finally:
        direct.stop()
        discovering.stop()
        rig.emulator.stop()


def scrape(url: str, deadline: float | None = None) -> tuple[str, float]:
    """One real scrape; returns the body and how long it took. Asserts HTTP 200 and the time bound."""
    headers = {} if deadline is None else {"X-Prometheus-Scrape-Timeout-Seconds": str(deadline + 0.5)}
    started = time.monotonic()
    status, _, body = http_get(url, headers, timeout=HEALTHY_TIMEOUT_SECONDS + 30)
    elapsed = time.monotonic() - started
    assert status == 200, body
    bound = (HEALTHY_TIMEOUT_SECONDS if deadline is None else deadline) + MARGIN_SECONDS
    assert elapsed < bound, f"the scrape took {elapsed:.2f}s, more than {bound}s"
    return body.decode(), elapsed


def assert_down(text: str, reason: Reason) -> None:
    assert value(text, "trueconf_up") == 0, text
    failed = {r.value for r in Reason if value(text, "trueconf_scrape_error", reason=r.value) == 1}
    assert failed == {reason.value}, text
    with pytest.raises(KeyError):
        value(text, "trueconf_outgoing_file_requests", status="downloading", destination="peer")


def assert_doc_example(text: str) -> None:
    """The documentation's example Room: two downloading requests, one to a peer, one to a conference."""
    assert value(text, "trueconf_up") == 1, text
    assert value(text, "trueconf_outgoing_file_requests", status="downloading", destination="peer") == 1
    assert value(text, "trueconf_outgoing_file_requests", status="downloading", destination="conference") == 1
    assert (
        value(text, "trueconf_outgoing_file_requests_size_bytes", status="downloading", destination="peer")
        == 3200
    )
    assert value(text, "trueconf_outgoing_file_requests_malformed") == 0


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the most resident memory the process has ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def check_fault_then_recovery(
    rig: Rig, process: Process, reason: Reason, switch_back: Callable[[], None]
) -> str:
    """Scrape the faulty Room, switch it back, scrape again; returns the faulty scrape's body."""
    text, _ = scrape(rig.url(process), FAULT_DEADLINE_SECONDS)
    assert_down(text, reason)
    assert process.alive(), process.stderr
    switch_back()
    healthy, _ = scrape(rig.url(process))
    assert_doc_example(healthy)
    return text


@pytest.mark.parametrize(("fault", "reason"), FAULTS, ids=[fault.value for fault, _ in FAULTS])
def test_fault_is_reported_and_the_next_scrape_is_healthy(rig: Rig, fault: Fault, reason: Reason) -> None:
    assert_doc_example(scrape(rig.url(rig.direct))[0])
    rig.settings.fault = fault

    def heal() -> None:
        rig.settings.fault = Fault.NONE

    try:
        check_fault_then_recovery(rig, rig.direct, reason, heal)
    finally:
        heal()


@pytest.mark.parametrize("fault", [Fault.HUGE_REPLY, Fault.HUGE_FRAGMENTED_REPLY], ids=str)
def test_huge_reply_does_not_grow_the_exporter_process(rig: Rig, fault: Fault) -> None:
    """A 64 MiB reply read whole would raise the exporter's peak RSS by 64 MiB at the very least; refused, it
    costs the limit a few times over at most (fragments are joined; malloc keeps per-thread arenas)."""
    pid = rig.direct.popen.pid
    scrape(rig.url(rig.direct))
    before = peak_rss_bytes(pid)
    rig.settings.fault = fault
    try:
        assert_down(scrape(rig.url(rig.direct), FAULT_DEADLINE_SECONDS)[0], Reason.PROTOCOL)
    finally:
        rig.settings.fault = Fault.NONE
    growth = peak_rss_bytes(pid) - before
    assert growth < HUGE_REPLY_BYTES // 2, f"peak RSS grew by {growth / MiB:.1f} MiB"


def test_wrong_pin_is_auth_and_never_shown(rig: Rig) -> None:
    rig.settings.pin = "9999"

    def heal() -> None:
        rig.settings.pin = PIN

    try:
        text = check_fault_then_recovery(rig, rig.direct, Reason.AUTH, heal)
    finally:
        heal()
    assert PIN not in text
    assert PIN not in rig.direct.stderr


def test_room_stopped_is_connect_and_a_restarted_room_is_read_again(rig: Rig) -> None:
    rig.emulator.stop()
    check_fault_then_recovery(rig, rig.direct, Reason.CONNECT, rig.restart_room)


def test_bad_config_json_is_protocol_through_discovery(rig: Rig) -> None:
    assert_doc_example(scrape(rig.url(rig.discovering))[0])
    rig.settings.fault = Fault.BAD_CONFIG_JSON

    def heal() -> None:
        rig.settings.fault = Fault.NONE

    try:
        check_fault_then_recovery(rig, rig.discovering, Reason.PROTOCOL, heal)
    finally:
        heal()


def test_ten_thousand_notifications_before_the_reply_are_skipped(rig: Rig) -> None:
    rig.settings.fault = Fault.NOTIFICATION_FLOOD
    try:
        text, _ = scrape(rig.url(rig.direct))
    finally:
        rig.settings.fault = Fault.NONE
    assert_doc_example(text)
    assert rig.direct.alive()


@pytest.mark.parametrize("fault", TOLERATED, ids=str)
def test_a_tolerated_fault_is_up_with_zero_requests(rig: Rig, fault: Fault) -> None:
    """What a real Room may send (reference §7) never makes it look down: a successful reply without its
    list is zero requests, every label pair present."""
    rig.settings.fault = fault
    try:
        text, _ = scrape(rig.url(rig.direct))
    finally:
        rig.settings.fault = Fault.NONE
    assert value(text, "trueconf_up") == 1, text
    assert value(text, "trueconf_scrape_error", reason="protocol") == 0
    assert value(text, "trueconf_outgoing_file_requests", status="downloading", destination="peer") == 0
    assert value(text, "trueconf_outgoing_file_requests_malformed") == 0
    assert_doc_example(scrape(rig.url(rig.direct))[0])


def test_every_fault_mode_of_the_emulator_is_covered() -> None:
    """A new fault mode must get its row here (or a test of its own), so none goes unproven."""
    covered = {fault for fault, _ in FAULTS} | {Fault.NONE, Fault.BAD_CONFIG_JSON, Fault.NOTIFICATION_FLOOD}
    covered |= set(TOLERATED)
    # the method and session faults (optional methods, restarts, half-open sessions, reordered replies):
    # proven against the emulator itself by tests/test_emulator_methods.py until rows of the exporter's own
    # take them over
    covered |= {Fault.OPTIONAL_UNKNOWN, Fault.OPTIONAL_SILENT, Fault.STALLED_REPLY, Fault.RESTART}
    covered |= {Fault.HALF_OPEN, Fault.REORDERED_REPLIES, Fault.FILE_TRANSFER_FORBIDDEN}
    # the notification faults: proven against the emulator by tests/test_emulator_transfers.py
    covered |= {Fault.NO_NOTIFICATIONS, Fault.REPEATED_NOTIFICATIONS, Fault.FLEETING_REQUESTS}
    covered |= {Fault.NOTIFICATION_STORM}
    assert set(Fault) == covered


# --- --max-message-bytes against hand-made frames -------------------------------------------------------


def fetch(port: int, max_message_bytes: int, timeout: float = 5.0) -> tuple[dict | CollectionError, float]:
    started = time.monotonic()
    try:
        target = parse_target(f"ws://127.0.0.1:{port}")
        replies = fetch_room(
            RoomRequest(target, None, max_message_bytes=max_message_bytes), Deadline(timeout)
        )
        result: dict | CollectionError = replies.replies[OUTGOING_METHOD]
    except CollectionError as error:
        result = error
    return result, time.monotonic() - started


@pytest.mark.parametrize(
    ("bad_frame", "detail"),
    [(bytes([0xC1, 1]) + b"x", "rsv"), (bytes([0x83, 1]) + b"x", "opcode")],
    ids=["rsv1-set", "opcode-3"],
)
def test_a_malformed_frame_is_the_rooms_protocol_fault_not_an_internal_one(bad_frame, detail) -> None:
    with raw_servers.tcp_server(websocket_room(bad_frame)) as port:
        result, _ = fetch(port, DEFAULT_MAX_MESSAGE_BYTES)
    assert isinstance(result, CollectionError), result
    assert result.reason is Reason.PROTOCOL and detail in result.message.lower(), result.message


def test_a_frame_announcing_eight_exabytes_is_refused_at_once() -> None:
    with raw_servers.tcp_server(websocket_room(frame(b"{", announced=(1 << 63) - 1))) as port:
        result, elapsed = fetch(port, DEFAULT_MAX_MESSAGE_BYTES)
    assert isinstance(result, CollectionError), result
    assert result.reason is Reason.PROTOCOL
    assert "more than" in result.message
    assert elapsed < 1.0 + MARGIN_SECONDS, (
        "the refusal waited for the deadline instead of acting on the header"
    )


@pytest.mark.parametrize("size", [200, 70_000, 300_000])
def test_a_message_exactly_at_the_limit_is_read_and_one_byte_more_is_refused(size: int) -> None:
    with raw_servers.tcp_server(websocket_room(frame(reply_of_size(size)))) as port:
        accepted, _ = fetch(port, size)
        refused, _ = fetch(port, size - 1)
    assert isinstance(accepted, dict), accepted
    assert accepted["outgoingFilesRequests"] == Snapshot()  # an empty list, aggregated as it was read
    assert isinstance(refused, CollectionError)
    assert refused.reason is Reason.PROTOCOL


def test_fragments_each_under_the_limit_are_refused_when_their_total_is_over() -> None:
    message = reply_of_size(30_000)
    parts = [message[:10_000], message[10_000:20_000], message[20_000:]]
    fragmented = (
        frame(parts[0], fin=False) + frame(parts[1], opcode=0x0, fin=False) + frame(parts[2], opcode=0x0)
    )
    with raw_servers.tcp_server(websocket_room(fragmented)) as port:
        refused, _ = fetch(port, 25_000)
        accepted, _ = fetch(port, 30_000)
    assert isinstance(refused, CollectionError)
    assert refused.reason is Reason.PROTOCOL
    assert isinstance(accepted, dict)
    assert accepted["outgoingFilesRequests"].total == 0


def test_the_running_total_restarts_with_every_message() -> None:
    """Many small notifications add up to far more than the limit; only a single message counts."""
    event = b'{"method":"event","event":"appStateChanged","appState":3}'
    frames = frame(event) * 200 + frame(reply_of_size(2_000))
    with raw_servers.tcp_server(websocket_room(frames)) as port:
        result, _ = fetch(port, 2_000)
    assert isinstance(result, dict), result


def test_a_control_frame_announcing_a_huge_payload_is_refused() -> None:
    with raw_servers.tcp_server(websocket_room(frame(b"", opcode=0x9, announced=1 << 40))) as port:
        result, _ = fetch(port, DEFAULT_MAX_MESSAGE_BYTES)
    assert isinstance(result, CollectionError)
    assert result.reason is Reason.PROTOCOL


@pytest.mark.parametrize("fault", [Fault.HUGE_REPLY, Fault.HUGE_FRAGMENTED_REPLY], ids=str)
def test_huge_reply_costs_the_client_no_more_than_the_limit(processes: dict, fault: Fault) -> None:
    """tracemalloc sees only this process; the Room is another one, so every byte counted is the client's."""
    emulator = processes["emulator"]("--scenario", "doc-example", "--fault", fault.value)
    target = parse_target(f"ws://127.0.0.1:{emulator.ports['websocket']}")
    limit = 2 * MiB
    tracemalloc.start()
    try:
        collection = collect_room(RoomRequest(target, None, max_message_bytes=limit), 5.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not collection.up
    assert collection.error is not None and collection.error.reason is Reason.PROTOCOL
    assert peak < 4 * limit, f"the client allocated {peak / MiB:.1f} MiB for a refused reply"


# --- a long run: the Room freezes, dies and comes back --------------------------------------------------


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def all_threads_stopped(pid: int) -> bool:
    """Every thread of `pid` stopped (state T): kill() returns before the SIGSTOP has stopped them all."""
    tasks = os.listdir(f"/proc/{pid}/task")
    return all(
        Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
        for task in tasks
    )


def test_room_that_stops_answering_mid_run_and_comes_back(tmp_path: Path) -> None:
    """SIGSTOP freezes the Room (the kernel still accepts connections, nobody answers them), SIGCONT thaws
    it; then it is killed and a new Room starts on the same port. The exporter reports each phase and
    recovers after each, without leaking descriptors."""
    room = start_emulator(tmp_path, "--scenario", "doc-example")
    port = room.ports["websocket"]
    exporter = start_exporter(tmp_path, "--target", f"ws://127.0.0.1:{port}", "--timeout", "10")
    url = f"http://127.0.0.1:{exporter.ports['http']}/metrics"
    try:
        for _ in range(5):
            assert_doc_example(scrape(url)[0])
        fds = open_fds(exporter.popen.pid)

        room.popen.send_signal(signal.SIGSTOP)
        assert wait_until(lambda: all_threads_stopped(room.popen.pid), 5), "the Room froze"
        try:
            for _ in range(3):
                assert_down(scrape(url, FAULT_DEADLINE_SECONDS)[0], Reason.TIMEOUT)
        finally:
            room.popen.send_signal(signal.SIGCONT)
        for _ in range(3):
            assert_doc_example(scrape(url)[0])

        room.stop()
        for _ in range(3):
            assert_down(scrape(url, FAULT_DEADLINE_SECONDS)[0], Reason.CONNECT)
        room = start_emulator(tmp_path, "--scenario", "doc-example", "--port", str(port))
        for _ in range(5):
            assert_doc_example(scrape(url)[0])

        assert exporter.alive(), exporter.stderr
        assert open_fds(exporter.popen.pid) <= fds + 2
    finally:
        room.stop()
        exporter.stop()


def test_numbers_beyond_float_range_are_defects_not_a_failed_scrape(room, processes: dict) -> None:
    """JSON integers are unbounded: a size of 10**308 (twice) or a timestamp of 10**400 once made the
    exposition raise and the scrape answer HTTP 500 (found by test_parser_properties)."""
    huge = Scenario(
        entries=[
            {"status": 2, "size": 10**308},
            {"status": 2, "size": 10**308},
            {"status": 1, "size": 5, "timestamp": 10**400},
        ]
    )
    emulator = room(huge)
    exporter = processes["exporter"]("--target", f"ws://127.0.0.1:{emulator.ports.websocket}")
    text, _ = scrape(f"http://127.0.0.1:{exporter.ports['http']}/metrics")
    assert value(text, "trueconf_up") == 1
    assert value(text, "trueconf_outgoing_file_requests", status="downloading", destination="peer") == 2
    assert value(text, "trueconf_outgoing_file_requests", status="waiting", destination="peer") == 1
    assert (
        value(text, "trueconf_outgoing_file_requests_size_bytes", status="waiting", destination="peer") == 5
    )
    assert value(text, "trueconf_outgoing_file_requests_malformed") == 3
    assert exporter.alive()


# --- --max-message-bytes on the command line ------------------------------------------------------------

FORTY_ENTRIES = Scenario(
    entries=[{"status": 2, "size": 3200, "peerId": f"{n}@x", "fileName": "x" * 60} for n in range(40)]
)
"""A reply of about 4 KiB."""


def test_max_message_bytes_of_serve_is_read_from_its_environment_variable(room, processes: dict) -> None:
    emulator = room(FORTY_ENTRIES)
    target = f"ws://127.0.0.1:{emulator.ports.websocket}"
    small = processes["exporter"]("--target", target, env={"TRUECONF_EXPORTER_MAX_MESSAGE_BYTES": "2048"})
    default = processes["exporter"]("--target", target)
    assert_down(scrape(f"http://127.0.0.1:{small.ports['http']}/metrics")[0], Reason.PROTOCOL)
    text, _ = scrape(f"http://127.0.0.1:{default.ports['http']}/metrics")
    assert value(text, "trueconf_outgoing_file_requests", status="downloading", destination="peer") == 40


def test_check_refuses_a_reply_over_max_message_bytes_and_help_shows_the_variable(room) -> None:
    emulator = room(FORTY_ENTRIES)
    target = f"ws://127.0.0.1:{emulator.ports.websocket}"

    def check(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*exporter_command(), "check", "--target", target, *extra],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    refused = check("--max-message-bytes", "2048")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert 'trueconf_scrape_error{reason="protocol"} 1.0' in refused.stdout
    assert check().returncode == 0
    helped = subprocess.run(
        [*exporter_command(), "serve", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert "--max-message-bytes" in helped.stdout
    assert "TRUECONF_EXPORTER_MAX_MESSAGE_BYTES" in helped.stdout
