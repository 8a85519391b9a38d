"""The transfer counters are exact: what the exporter counts for a Room equals what the Room did.

A fast living Room (`fast_living_room`: hundreds of transfers a minute, both directions, both sides, both
ends) is read by the exporter's own collection (`collect_room` with a session pool) every SCRAPE_INTERVAL
seconds for a long run; the Room's record of its transitions since a mark (`transfers_since_mark`) is the
truth. The protocol: pause the Room, scrape once (its lists are history: nothing counted), mark, resume,
scrape every SCRAPE_INTERVAL, pause, scrape once more (after every notification of what the Room did: a
reply comes after them on the session), compare. The same for the notification faults, for sessions
replaced between scrapes, and through a real `serve` process on /metrics and /probe.

Each test prints its figures (run with `-s` to see them): how long the Room lived, how many transfers it
made per direction, how many scrapes read it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from exporter.collect.collection import Collection, collect_room
from exporter.emulator.faults import Fault
from exporter.emulator.living import DIRECTIONS, DirectionTotals, LivingRoom, Transitions, fast_living_room
from exporter.emulator.server import RunningEmulator
from exporter.methods import INCOMING_METHOD, OUTGOING_METHOD
from exporter.room import RoomTarget, parse_target
from exporter.room.request import RoomRequest
from exporter.room.sessions import SessionPool
from tests.exposition import samples
from tests.processes import Process, http_get

Totals = dict[str, DirectionTotals]

SCRAPE_INTERVAL = 0.2
"""Seconds from one scrape's start to the next's."""
RUN_SECONDS = 25.0
"""How long the Room lives between the mark and the final pause, without a fault."""
FAULT_RUN_SECONDS = 15.0
"""The same with each notification fault, and with sessions replaced."""
KEEP_FINISHED_SECONDS = 2.0
"""How long the fast Room lists a finished request: ten scrape intervals."""
METHODS = (OUTGOING_METHOD, INCOMING_METHOD)
"""Both lists, so both directions are compared with what was seen before."""
ZERO: Totals = Transitions().as_dicts()
WAIT_SECONDS = 20.0
"""Bound of every wait below for something to happen; each is over within a few seconds."""

COUNTERS = {
    "outgoing": ("trueconf_outgoing_file_requests", "destination"),
    "incoming": ("trueconf_incoming_file_requests", "source"),
}
"""Each direction's metric name prefix and side label."""


def counted(collection: Collection) -> Totals:
    """What the exporter counted, in the shape of `RunningEmulator.transfers()`."""
    transfers = collection.transfers
    assert transfers is not None, "a collection through a session pool carries the Room's counters"
    return {"outgoing": asdict(transfers.outgoing), "incoming": asdict(transfers.incoming)}


def flat(totals: Totals) -> dict[tuple[Any, ...], int]:
    """Every counter of `totals` by (direction, kind, key)."""
    found: dict[str, Any] = dict(totals)
    return {
        (direction, kind, key): value
        for direction in DIRECTIONS
        for kind, values in found[direction].items()
        for key, value in values.items()
    }


def at_most(smaller: Totals, larger: Totals) -> bool:
    """Every counter of `smaller` at most the same counter of `larger`."""
    small, large = flat(smaller), flat(larger)
    return small.keys() == large.keys() and all(small[key] <= large[key] for key in large)


def differences(counts: Totals, truth: Totals) -> dict[tuple[Any, ...], tuple[int, int]]:
    """The counters that differ from the truth: (direction, kind, key) -> (counted, truth)."""
    counted_flat, truth_flat = flat(counts), flat(truth)
    return {
        key: (counted_flat[key], truth_flat[key])
        for key in truth_flat
        if counted_flat[key] != truth_flat[key]
    }


def figures(truth: Totals) -> str:
    """`outgoing 512 created, 301 processed, 60 failed; incoming ...`."""
    parts = []
    for direction in DIRECTIONS:
        totals = truth[direction]
        finished = totals["finished"]
        processed = sum(n for (status, _), n in finished.items() if status == "processed")
        failed = sum(n for (status, _), n in finished.items() if status == "failed")
        parts.append(
            f"{direction} {sum(totals['created'].values())} created, {processed} processed, {failed} failed"
        )
    return "; ".join(parts)


def exercised(truth: Totals) -> None:
    """The run made every kind of transfer: both sides created, both ends on both sides, bytes."""
    for direction in DIRECTIONS:
        assert all(truth[direction]["created"].values()), (direction, truth[direction])
        assert all(truth[direction]["finished"].values()), (direction, truth[direction])
        assert all(truth[direction]["processed_bytes"].values()), (direction, truth[direction])


@pytest.fixture
def pool(room: Callable[..., RunningEmulator]) -> Iterator[SessionPool]:
    """A session pool closed before the emulated Rooms stop (they would wait for the open sessions)."""
    sessions = SessionPool()
    yield sessions
    sessions.close_all()


def living(
    seconds_between_requests: float, keep_finished_seconds: float = KEEP_FINISHED_SECONDS
) -> LivingRoom:
    """A fast living Room with a history (its requests of every status when first read, not counted)."""
    room = fast_living_room(seconds_between_requests, keep_finished_seconds=keep_finished_seconds)
    room.start(time.time())
    return room


def target_of(emulator: RunningEmulator) -> RoomTarget:
    assert emulator.ports is not None
    return parse_target(f"ws://127.0.0.1:{emulator.ports.websocket}")


@dataclass
class Run:
    first: Totals
    """Counted at the first scrape, the Room paused: its lists are history."""
    counted: Totals
    """Counted at the final scrape, the Room paused again."""
    truth: Totals
    """What the Room did between the mark and the final pause."""
    seconds: float
    scrapes: int
    longest_gap: float
    """The longest time between two scrapes' answers in the run."""

    def report(self, what: str) -> None:
        print(
            f"\n{what}: {self.seconds:.1f} s, {self.scrapes} scrapes (longest gap {self.longest_gap:.2f} s): "
            f"{figures(self.truth)}"
        )


def exact_run(
    emulator: RunningEmulator,
    pool: SessionPool,
    seconds: float,
    between: Callable[[int], None] | None = None,
    timeout: float = 5.0,
) -> Run:
    """Pause, first scrape, mark, resume, scrape every SCRAPE_INTERVAL for `seconds` (`between(n)` after the
    n-th), pause, final scrape. Every scrape must be up, and never count more than the Room did so far."""
    target = target_of(emulator)

    def scrape() -> Collection:
        collection = collect_room(RoomRequest(target, None, methods=METHODS), timeout, pool=pool)
        assert collection.up, collection.error
        return collection

    emulator.pause()
    first = counted(scrape())
    emulator.mark()
    emulator.resume()
    started = last_answer = time.monotonic()
    longest_gap = 0.0
    scrapes = 0
    while time.monotonic() - started < seconds:
        now_counted = counted(scrape())
        answered = time.monotonic()
        longest_gap, last_answer = max(longest_gap, answered - last_answer), answered
        scrapes += 1
        so_far = emulator.transfers_since_mark()
        assert at_most(now_counted, so_far), (
            f"counted more than the Room did: {differences(now_counted, so_far)}"
        )
        if between is not None:
            between(scrapes)
        pace(started + scrapes * SCRAPE_INTERVAL)
    emulator.pause()
    lived = time.monotonic() - started
    final = counted(scrape())
    return Run(first, final, emulator.transfers_since_mark(), lived, scrapes + 2, longest_gap)


def pace(until: float) -> None:
    """Wait for the next scrape's time (the scrape interval, as Prometheus keeps it), never to synchronise:
    nothing is expected to have happened when it returns."""
    left = until - time.monotonic()
    if left > 0:
        time.sleep(left)


# --- exact over a long run ----------------------------------------------------------------------------------


def test_the_counters_equal_the_rooms_transitions_over_a_long_run(room, pool):
    """Notifications and lists together: every transfer counted once, per direction, status and side."""
    emulator = room(living=living(0.05))
    run = exact_run(emulator, pool, RUN_SECONDS)
    run.report("no fault")
    assert run.first == ZERO, "what the Room lists when first read is history"
    assert run.counted == run.truth, differences(run.counted, run.truth)
    exercised(run.truth)
    created = sum(sum(run.truth[d]["created"].values()) for d in DIRECTIONS)
    assert created >= 300, f"a long run makes hundreds of transfers, not {created}"
    transfers = pool.transfers(pool.key(str(target_of(emulator)), None))
    assert transfers is not None and transfers.untracked == 0


def test_without_notifications_the_lists_alone_count_exactly(room, pool):
    """A Room that sends no notification: counted from the lists alone, which is exact when every request is
    seen by a scrape in its final status. The fast Room lists a finished request for KEEP_FINISHED_SECONDS
    (2 s), ten scrape intervals, and a request is listed from its creation on: every scrape answered within
    2 s of the one before sees every request in its final status (the run checks it did)."""
    emulator = room(living=living(0.1), fault=Fault.NO_NOTIFICATIONS)
    run = exact_run(emulator, pool, FAULT_RUN_SECONDS)
    run.report("no-notifications")
    assert emulator.room.records[-1].notifications == 0
    assert run.longest_gap < KEEP_FINISHED_SECONDS, "the condition of exactness from the lists alone"
    assert run.first == ZERO
    assert run.counted == run.truth, differences(run.counted, run.truth)
    exercised(run.truth)


@pytest.mark.parametrize("fault", [Fault.REPEATED_NOTIFICATIONS, Fault.FLEETING_REQUESTS], ids=str)
def test_faulty_notifications_still_count_each_transfer_once(room, pool, fault: Fault):
    """Every notification three times (and the lists besides): nothing counted twice. Requests that leave the
    lists as they finish, so no list shows one processed or failed: the notifications alone suffice."""
    emulator = room(living=living(0.1), fault=fault)
    run = exact_run(emulator, pool, FAULT_RUN_SECONDS)
    run.report(fault.value)
    assert run.first == ZERO
    assert run.counted == run.truth, differences(run.counted, run.truth)
    exercised(run.truth)


# --- replaced sessions --------------------------------------------------------------------------------------


def replaced(emulator: RunningEmulator, pool: SessionPool, how: str, timeout: float) -> Collection:
    """Replace the exporter's session to the Room (`restart`: the Room drops the connection; `sever`: the
    connection goes half-open, its Room reading but answering nothing, so the scrape after it times out and
    the session is closed), then scrape until the new session answered; returns its collection. Every
    scrape carries the Room's counters, and none counts more than the Room did."""
    target = target_of(emulator)
    logins = pool.logins
    assert (emulator.restart() if how == "restart" else emulator.sever()) == 1, "the exporter's session"
    collection = collect_room(RoomRequest(target, None, methods=METHODS), timeout, pool=pool)
    if how == "sever":
        assert not collection.up and collection.error is not None, "a Room that pongs but never answers"
        assert at_most(counted(collection), emulator.transfers_since_mark())
        collection = collect_room(RoomRequest(target, None, methods=METHODS), timeout, pool=pool)
    assert collection.up, collection.error
    assert pool.logins == logins + 1, "a new session logged in"
    return collection


def test_a_replaced_session_counts_nothing_twice(room, pool):
    """The Room's session replaced while it does nothing: the new session's first lists show requests the
    old one counted, and no counter moves."""
    emulator = room(living=living(0.05))
    run = exact_run(emulator, pool, 3.0)  # some transfers counted, the Room paused
    assert run.counted == run.truth and run.truth != ZERO
    for how in ("restart", "sever", "restart"):
        assert counted(replaced(emulator, pool, how, timeout=2.0)) == run.truth, f"after {how}"


def test_sessions_replaced_during_a_long_run_count_every_transfer_once(room, pool):
    """The Room restarts, or the session goes half-open, every few scrapes while the Room lives: what the
    Room did while no session listened is counted from the new session's lists (the Room lists a finished
    request for 10 s here, longer than a replacement takes: at most a scrape's 2 s deadline and the next
    scrape), what both sessions saw is counted once."""
    emulator = room(living=living(0.1, keep_finished_seconds=10.0))
    replacements = 0

    def replace(scrape: int) -> None:
        nonlocal replacements
        if scrape % 10 in (0, 5):
            replaced(emulator, pool, "sever" if scrape % 10 == 0 else "restart", timeout=2.0)
            replacements += 1

    run = exact_run(emulator, pool, FAULT_RUN_SECONDS, between=replace, timeout=2.0)
    run.report(f"sessions replaced ({replacements} times)")
    assert replacements >= 6
    assert run.counted == run.truth, differences(run.counted, run.truth)
    exercised(run.truth)


# --- a real exporter ----------------------------------------------------------------------------------------


def scraped(text: str) -> Totals:
    """The counters of an exposition, in the shape of `RunningEmulator.transfers()`; KeyError for a series
    that is absent."""
    found = samples(text)

    def one(name: str, **labels: str) -> int:
        value = found[(name, frozenset(labels.items()))]
        assert value == int(value), (name, labels, value)
        return int(value)

    totals: Totals = {}
    for direction, (prefix, side) in COUNTERS.items():
        sides = ("peer", "conference")
        totals[direction] = DirectionTotals(
            created={s: one(f"{prefix}_created_total", **{side: s}) for s in sides},
            finished={
                (status, s): one(f"{prefix}_finished_total", status=status, **{side: s})
                for status in ("processed", "failed")
                for s in sides
            },
            processed_bytes={s: one(f"{prefix}_processed_bytes_total", **{side: s}) for s in sides},
        )
    return totals


def up(text: str) -> float:
    return samples(text)[("trueconf_up", frozenset())]


def counter_series(text: str) -> int:
    """How many series of the transfer counters the exposition has."""
    return sum(
        1
        for name, _ in samples(text)
        if name.startswith(("trueconf_outgoing_file_requests_", "trueconf_incoming_file_requests_"))
        and name.endswith("_total")
    )


def finished(scrape: Callable[[], str], emulator: RunningEmulator) -> int:
    """Scrape once (as Prometheus would meanwhile), then the requests the Room finished since the mark."""
    scrape()
    return sum(n for key, n in flat(emulator.transfers_since_mark()).items() if key[1] == "finished")


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT_SECONDS} s: {what}"
        time.sleep(0.05)  # the poll interval of this bounded wait


@pytest.fixture
def exporter_of(processes, tmp_path: Path) -> Callable[..., Callable[[], str]]:
    """`exporter_of(emulator, mode, *flags)`: a real `serve` process reading the emulated Room, on /metrics
    (`mode` "metrics") or through /probe with a config file ("probe"); returns a function that scrapes it
    once and gives the exposition."""

    def start(emulator: RunningEmulator, mode: str, *flags: str) -> Callable[[], str]:
        assert emulator.ports is not None
        room = f"127.0.0.1:{emulator.ports.websocket}"
        if mode == "metrics":
            exporter: Process = processes["exporter"]("--target", f"ws://{room}", *flags)
            path = "/metrics"
        else:
            config = tmp_path / "config.yml"
            config.write_text("modules:\n  open: {}\nallowed_targets: ['127.0.0.1']\n")
            exporter = processes["exporter"]("--config.file", str(config), *flags)
            path = f"/probe?target={room}&module=open"
        url = f"http://127.0.0.1:{exporter.ports['http']}{path}"

        def scrape() -> str:
            status, _, body = http_get(url)
            assert status == 200, body
            return body.decode()

        return scrape

    return start


@pytest.mark.parametrize("mode", ["metrics", "probe"])
def test_a_real_exporter_exposes_the_counters_from_the_first_scrape_and_while_the_room_is_down(
    room, exporter_of, mode
):
    emulator = room(living=living(0.05))
    scrape = exporter_of(emulator, mode)
    emulator.pause()
    first = scrape()
    assert up(first) == 1
    assert counter_series(first) == 16, "every series of both directions, from the first scrape"
    assert scraped(first) == ZERO, "present at 0: increase() works from the start"
    emulator.mark()
    emulator.resume()
    wait_until(lambda: finished(scrape, emulator) >= 20, "transfers finished")
    emulator.pause()
    counts = scraped(scrape())
    truth = emulator.transfers_since_mark()
    assert counts == truth, "counted exactly through the real exporter too"
    print(f"\nreal exporter, {mode}: {figures(truth)}")
    emulator.room.settings.fault = Fault.HTTP_INSTEAD_OF_WEBSOCKET
    emulator.restart()
    down = scrape()
    assert up(down) == 0, down
    assert scraped(down) == truth, "a Room that is down keeps its counters' values"
    emulator.room.settings.fault = Fault.NONE
    again = scrape()
    assert up(again) == 1 and scraped(again) == truth, "and goes on from them when it is back"


def test_a_room_forgotten_after_the_session_idle_timeout_starts_again_at_zero(room, exporter_of):
    emulator = room(living=living(0.05))
    scrape = exporter_of(emulator, "probe", "--room.session-idle-timeout", "1s")
    emulator.pause()
    assert scraped(scrape()) == ZERO
    emulator.mark()
    emulator.resume()
    wait_until(lambda: finished(scrape, emulator) >= 20, "transfers finished")
    emulator.pause()
    before = scraped(scrape())
    assert before == emulator.transfers_since_mark() and before != ZERO
    wait_until(lambda: emulator.open_connections == 0, "the idle session closed and its Room forgotten")
    back = scrape()
    assert up(back) == 1
    assert scraped(back) == ZERO, "a forgotten Room's counters start again at 0; its lists are history again"
    emulator.mark()
    emulator.resume()
    wait_until(lambda: finished(scrape, emulator) >= 20, "transfers finished again")
    emulator.pause()
    assert scraped(scrape()) == emulator.transfers_since_mark(), "and count from there"
