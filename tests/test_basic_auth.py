"""Basic auth under attack: bounded bcrypt, cached failures, timing that names no user, a log that holds.

The unit tests drive `PasswordChecker`, `FailureLog` and `WebSecurity` in this process. The process tests
start a real `serve` on loopback and attack it as a hostile client would; the figures they see (scrape
latency under attack, CPU, check durations) are printed (`pytest -s`), and asserted only with generous
bounds.
"""

from __future__ import annotations

import io
import logging
import os
import statistics
import threading
import time
from base64 import b64encode
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from exporter.web import auth
from exporter.web.auth import (
    BCRYPT_SLOTS,
    FailureLog,
    PasswordChecker,
    Verdict,
    WebSecurity,
    parse_basic_auth,
)
from exporter.web.config import WebConfigWatcher
from tests.processes import Process, http_get

PASSWORD = "correct horse battery staple"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def make_hash(cost: int, password: str = PASSWORD) -> bytes:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost))


# ---------------------------------------------------------------------------------------------------------
# Unit tests: this process only.


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic " + b64encode(b"a:b:c").decode(), ("a", "b:c")),
        ("basic " + b64encode("ü:p".encode()).decode(), ("ü", "p")),
        ("Basic " + b64encode(b"nocolon").decode(), None),
        ("Basic !!!", None),
        ("Bearer abc", None),
        (None, None),
    ],
)
def test_parse_basic_auth(header, expected):
    assert parse_basic_auth(header) == expected


class CountingChecker(PasswordChecker):
    """Counts bcrypt checks and the most that ever ran at once."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.calls = 0
        self.running = 0
        self.peak = 0
        self._count_lock = threading.Lock()

    def bcrypt_check(self, hashed: bytes, secret: bytes) -> bool:  # type: ignore[override]
        with self._count_lock:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            return PasswordChecker.bcrypt_check(hashed, secret)
        finally:
            with self._count_lock:
                self.running -= 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_repeated_wrong_password_costs_no_bcrypt_until_its_entry_expires():
    clock = FakeClock()
    checker = CountingChecker(clock=clock, sleep=lambda seconds: None, failure_ttl=30)
    users = {"prometheus": make_hash(4)}
    assert checker.check(users, "prometheus", "wrong") is Verdict.REFUSED
    after_first = checker.calls  # the calibration of the dummy hash, and the check itself
    for _ in range(20):
        assert checker.check(users, "prometheus", "wrong") is Verdict.REFUSED
        assert checker.check(users, "nobody", "wrong") is Verdict.REFUSED
    assert checker.calls == after_first + 1  # the unknown user's first try; the rest came from the cache
    clock.now += 31
    assert checker.check(users, "prometheus", "wrong") is Verdict.REFUSED
    assert checker.calls == after_first + 2
    # A cached failure is for that password only.
    assert checker.check(users, "prometheus", PASSWORD) is Verdict.ALLOWED
    calls = checker.calls
    clock.now += 10_000
    assert checker.check(users, "prometheus", PASSWORD) is Verdict.ALLOWED
    assert checker.calls == calls  # successes do not expire: a scrape every few seconds pays bcrypt once


def test_the_caches_are_bounded_and_failures_cannot_push_out_successes():
    checker = CountingChecker(sleep=lambda seconds: None)
    users = {"prometheus": make_hash(4)}
    assert checker.check(users, "prometheus", PASSWORD) is Verdict.ALLOWED
    for n in range(auth.FAILURE_CACHE_SIZE + 50):
        checker.check(users, "prometheus", f"wrong {n}")
    assert len(checker._failures) == auth.FAILURE_CACHE_SIZE
    calls = checker.calls
    assert checker.check(users, "prometheus", PASSWORD) is Verdict.ALLOWED
    assert checker.check(users, "prometheus", f"wrong {auth.FAILURE_CACHE_SIZE + 49}") is Verdict.REFUSED
    assert checker.calls == calls
    assert checker.check(users, "prometheus", "wrong 0") is Verdict.REFUSED  # pushed out: checked again
    assert checker.calls == calls + 1


def test_the_cache_keys_hold_no_password():
    checker = PasswordChecker(sleep=lambda seconds: None)
    users = {"prometheus": make_hash(4)}
    checker.check(users, "prometheus", PASSWORD)
    checker.check(users, "prometheus", "hunter2")
    for key in [*checker._successes, *checker._failures]:
        assert len(key) == 32 and PASSWORD.encode() not in key and b"hunter2" not in key


def test_no_more_than_the_bound_of_bcrypt_checks_run_at_once_and_a_long_wait_is_busy():
    checker = CountingChecker(slot_wait=0.05)
    users = {"prometheus": make_hash(9)}
    verdicts: Counter[Verdict] = Counter()
    lock = threading.Lock()

    def attack(n: int) -> None:
        for i in range(3):
            verdict = checker.check(users, "prometheus", f"wrong {n} {i}")
            with lock:
                verdicts[verdict] += 1

    threads = [threading.Thread(target=attack, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert checker.peak == BCRYPT_SLOTS == 1
    assert verdicts[Verdict.BUSY] > 0 and verdicts[Verdict.REFUSED] > 0
    assert Verdict.ALLOWED not in verdicts


def test_an_uncached_check_lasts_as_long_as_one_at_the_highest_cost():
    """A cheap user's check, right or wrong, is padded to the expensive hash's usual duration."""
    users = {"cheap": make_hash(4), "dear": make_hash(10)}
    checker = PasswordChecker()
    durations = {}
    for name, user, password in [
        ("unknown", "nobody", "x"),
        ("dear, wrong", "dear", "x"),
        ("cheap, wrong", "cheap", "x"),
        ("cheap, right", "cheap", PASSWORD),
    ]:
        started = time.perf_counter()
        checker.check(users, user, password)
        durations[name] = time.perf_counter() - started
    expected = checker._references[10].expected()
    print({name: f"{seconds * 1000:.1f} ms" for name, seconds in durations.items()}, f"{expected=:.3f}")
    assert expected > 0.01  # cost 10 really ran
    for name in ("cheap, wrong", "cheap, right"):
        assert durations[name] >= expected * 0.95, name  # padded (sleep never returns early)


def test_a_request_queued_behind_a_cheap_users_check_waits_as_long_as_behind_a_dear_one():
    """The slot is held for the padded duration: a slot given back early would time the cheap bcrypt."""
    users = {"cheap": make_hash(4), "dear": make_hash(10)}
    checker = PasswordChecker()
    checker.prepare(users)
    behind: dict[str, list[float]] = {"cheap": [], "dear": []}
    for n in range(3):
        for user, seconds in behind.items():
            first = threading.Thread(target=checker.check, args=(users, user, f"wrong {n}"))
            first.start()
            deadline = time.monotonic() + 5
            while checker._slots._value and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.001)
            started = time.perf_counter()
            assert checker.check(users, "nobody", f"wrong {n} behind {user}") is Verdict.REFUSED
            seconds.append(time.perf_counter() - started)
            first.join(timeout=10)
    expected = checker._references[10].expected()
    medians = {user: statistics.median(seconds) for user, seconds in behind.items()}
    print({user: f"{seconds * 1000:.1f} ms" for user, seconds in medians.items()}, f"{expected=:.3f}")
    assert medians["cheap"] > 1.5 * expected  # waited for the cheap check's whole padded duration
    assert 0.8 < medians["cheap"] / medians["dear"] < 1.25


def web_security(tmp_path: Path, users: dict[str, bytes]) -> WebSecurity:
    config = tmp_path / "web.yml"
    config.write_text(
        "basic_auth_users:\n" + "".join(f"  {user}: {hashed.decode()}\n" for user, hashed in users.items())
    )

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"metrics\n"]

    return WebSecurity(app, WebConfigWatcher(config))


def call(security: WebSecurity, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> None:
        answer.update(status=status, headers=dict(headers))

    environ = {"PATH_INFO": "/metrics", "REMOTE_ADDR": "192.0.2.7", "wsgi.errors": io.StringIO()}
    environ.update({"HTTP_" + name.upper(): value for name, value in headers.items()})
    b"".join(security(environ, start_response))
    return answer["status"], answer["headers"]


def test_a_request_that_gets_no_bcrypt_slot_in_time_is_answered_429(tmp_path, caplog):
    security = web_security(tmp_path, {"prometheus": make_hash(4)})
    assert call(security, basic("prometheus", PASSWORD))[0] == "200 OK"
    security.checker._slot_wait = 0.01
    security.checker._slots.acquire()  # a long check holds the only slot
    try:
        with caplog.at_level(logging.WARNING, logger="exporter.web.auth"):
            status, headers = call(security, basic("prometheus", "wrong"))
        assert status == "429 Too Many Requests" and headers["Retry-After"] == "1"
        assert call(security, basic("prometheus", PASSWORD))[0] == "200 OK"  # cached: needs no slot
    finally:
        security.checker._slots.release()
    status, headers = call(security, basic("prometheus", "wrong"))
    assert status == "401 Unauthorized" and headers["WWW-Authenticate"].startswith("Basic")
    assert [record.detail for record in caplog.records] == [
        "1 refused with 429 while bcrypt was busy, from 1 address"
    ]


def test_failed_logins_are_one_line_per_interval_with_counts_and_no_names(caplog):
    clock = FakeClock()
    failures = FailureLog(interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="exporter.web.auth"):
        for n in range(200):
            failures.failed(f"user-{n % 7}", f"192.0.2.{n % 3}")
            clock.now += 0.01
        failures.busy("192.0.2.9")
        assert len(caplog.records) == 1  # the first failure, at once
        assert caplog.records[0].detail == "1 failed login for 1 distinct user name, from 1 address"
        clock.now += 10
        failures.flush()  # what the timer does when the interval ends
        failures.flush()  # nothing new: no line
    assert len(caplog.records) == 2
    record = caplog.records[1]
    assert record.levelname == "WARNING" and record.getMessage() == "basic auth failed"
    assert record.detail == (
        "199 failed logins for 7 distinct user names; 1 refused with 429 while bcrypt was busy, "
        "from 4 addresses, in the last 12 s"
    )
    assert record.address == "192.0.2.9"
    assert "user-" not in caplog.text


def test_the_interval_timer_reports_a_burst_that_stopped(caplog):
    failures = FailureLog(interval=0.2)
    with caplog.at_level(logging.WARNING, logger="exporter.web.auth"):
        for _ in range(50):
            failures.failed("mallory", "192.0.2.1")
        deadline = time.monotonic() + 5
        while len(caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    details = [record.detail for record in caplog.records]
    assert details[0] == "1 failed login for 1 distinct user name, from 1 address"
    assert details[1].startswith("49 failed logins for 1 distinct user name, from 1 address, in the last ")
    assert len(details) == 2


# ---------------------------------------------------------------------------------------------------------
# Process tests: a real `serve` on loopback.

INSTRUMENT = '''
"""Loaded into the exporter under test only (PYTHONPATH): counts bcrypt work running at once."""
import os
import threading

import bcrypt

_lock = threading.Lock()
_state = {"running": 0, "peak": 0, "calls": 0}
_path = os.environ["BCRYPT_PEAK_FILE"]


def _counted(function):
    def wrapper(*args, **kwargs):
        with _lock:
            _state["running"] += 1
            _state["calls"] += 1
            _state["peak"] = max(_state["peak"], _state["running"])
        try:
            return function(*args, **kwargs)
        finally:
            with _lock:
                _state["running"] -= 1
                with open(_path, "w") as file:
                    file.write(f"{_state['peak']} {_state['calls']}")

    return wrapper


bcrypt.checkpw = _counted(bcrypt.checkpw)
bcrypt.hashpw = _counted(bcrypt.hashpw)
'''


def serve(processes: Any, tmp_path: Path, users: dict[str, bytes], *extra: str, **options: Any) -> Process:
    config = tmp_path / "web.yml"
    config.write_text(
        "basic_auth_users:\n" + "".join(f"  {user}: {hashed.decode()}\n" for user, hashed in users.items())
    )
    return processes["exporter"]("--web.config.file", str(config), *extra, **options)


def timed(url: str, headers: dict[str, str]) -> tuple[int, float]:
    started = time.perf_counter()
    status = http_get(url, headers, timeout=30)[0]
    return status, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


ATTACKERS = 32
ATTACK_COST = 10
SCRAPES = 15


@pytest.mark.process
def test_a_flood_of_wrong_passwords_leaves_scrapes_answering(processes, tmp_path):
    """32 clients send fresh wrong passwords as fast as they are answered while Prometheus scrapes."""
    instrument = tmp_path / "instrument"
    instrument.mkdir()
    (instrument / "sitecustomize.py").write_text(INSTRUMENT)
    peak_file = tmp_path / "bcrypt-peak"
    room = processes["emulator"]()
    exporter = serve(
        processes,
        tmp_path,
        {"prometheus": make_hash(ATTACK_COST)},
        "--target",
        f"ws://127.0.0.1:{room.ports['websocket']}",
        env={"PYTHONPATH": str(instrument), "BCRYPT_PEAK_FILE": str(peak_file)},
    )
    url = f"http://127.0.0.1:{exporter.ports['http']}/metrics"
    right = basic("prometheus", PASSWORD)

    def scrape() -> float:
        status, seconds = timed(url, right)
        assert status == 200
        return seconds

    scrape()  # the one bcrypt check the scraper pays; cached from here on
    quiet = statistics.median(scrape() for _ in range(SCRAPES))

    stop = threading.Event()
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def attack(n: int) -> None:
        for i in range(10_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            status = http_get(url, basic("prometheus", f"guess {n} {i}"), timeout=30)[0]
            with lock:
                statuses[status] += 1

    attackers = [threading.Thread(target=attack, args=(n,), daemon=True) for n in range(ATTACKERS)]
    for thread in attackers:
        thread.start()
    try:
        time.sleep(1)  # let the attack reach its stride
        cpu_before, started = cpu_seconds(exporter.popen.pid), time.monotonic()
        time.sleep(2)  # the attack alone
        cores = (cpu_seconds(exporter.popen.pid) - cpu_before) / (time.monotonic() - started)
        attacked = [scrape() for _ in range(SCRAPES)]
    finally:
        stop.set()
        for thread in attackers:
            thread.join(timeout=40)
    peak, calls = (int(word) for word in peak_file.read_text().split())
    under_attack = statistics.median(attacked)
    print(
        f"\nscrape median: {quiet * 1000:.1f} ms quiet, {under_attack * 1000:.1f} ms under {ATTACKERS} "
        f"attacking clients (max {max(attacked) * 1000:.1f} ms); "
        f"exporter CPU under the attack alone {cores:.2f} cores; "
        f"bcrypt at once at most {peak} ({calls} calls); attackers' answers {dict(statuses)}"
    )
    assert peak <= BCRYPT_SLOTS
    assert statuses[401] > 0 and set(statuses) <= {401, 429}
    assert under_attack < 1.0  # generous; the figure is printed (unbounded bcrypt: 170-310 ms here)
    assert exporter.alive() and "Traceback" not in exporter.stderr


@pytest.mark.process
def test_unknown_and_known_users_take_as_long_whatever_their_bcrypt_cost(processes, tmp_path):
    """The cheap user comes first: it once set the dummy's cost, so unknown users were as quick as it."""
    users = {"cheap": make_hash(6), "dear": make_hash(11)}
    url = f"http://127.0.0.1:{serve(processes, tmp_path, users).ports['http']}/healthz"
    assert timed(url, basic("nobody", "warm-up"))[0] == 401  # makes the dummy hash
    runs: dict[str, list[float]] = {"cheap": [], "dear": [], "nobody": []}
    for n in range(5):
        for user, seconds in runs.items():
            status, took = timed(url, basic(user, f"wrong {n}"))
            assert status == 401
            seconds.append(took)
    status, cheap_right = timed(url, basic("cheap", PASSWORD))
    assert status == 200
    medians = {user: statistics.median(seconds) for user, seconds in runs.items()}
    print(
        "\nwrong password, median of 5: "
        + ", ".join(f"{user} {seconds * 1000:.1f} ms" for user, seconds in medians.items())
        + f"; cheap user's right password, first time: {cheap_right * 1000:.1f} ms"
    )
    assert medians["dear"] > 0.05  # bcrypt at cost 11 really ran
    for user in ("cheap", "nobody"):
        assert 0.67 < medians[user] / medians["dear"] < 1.5, user
    assert cheap_right / medians["dear"] > 0.67


@pytest.mark.process
def test_the_same_wrong_password_again_is_answered_from_the_cache(processes, tmp_path):
    exporter = serve(processes, tmp_path, {"prometheus": make_hash(12)})
    url = f"http://127.0.0.1:{exporter.ports['http']}/healthz"
    first = timed(url, basic("prometheus", "wrong"))
    again = [timed(url, basic("prometheus", "wrong")) for _ in range(5)]
    assert {first[0]} | {status for status, _ in again} == {401}
    repeated = statistics.median(seconds for _, seconds in again)
    print(f"\nwrong password at cost 12: first {first[1] * 1000:.1f} ms, again {repeated * 1000:.1f} ms")
    assert first[1] > 0.05 and repeated < first[1] / 4


@pytest.mark.process
def test_a_flood_of_failed_logins_is_a_line_or_two_in_the_log(processes, tmp_path):
    exporter = serve(processes, tmp_path, {"prometheus": make_hash(4)}, "--log.level", "debug")
    url = f"http://127.0.0.1:{exporter.ports['http']}/healthz"
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def attack(n: int) -> None:
        for i in range(25):
            user = "prometheus" if i % 2 else f"mallory{n}"
            status = http_get(url, basic(user, f"secret-guess-{n}-{i}"), timeout=30)[0]
            with lock:
                statuses[status] += 1

    attackers = [threading.Thread(target=attack, args=(n,)) for n in range(8)]
    for thread in attackers:
        thread.start()
    for thread in attackers:
        thread.join(timeout=60)
    assert statuses == {401: 200}
    lines = [line for line in exporter.stderr.splitlines() if "basic auth failed" in line]
    print("\n" + "\n".join(lines))
    assert 1 <= len(lines) <= 2
    assert "level=warning" in lines[0] and "1 failed login" in lines[0]
    assert "mallory" not in exporter.stderr and "secret-guess" not in exporter.stderr
