"""Basic auth under attack: one bcrypt check at a time, cached answers, a dummy hash for unknown users, a log
that holds.

The unit tests drive `PasswordChecker` and `WebSecurity` in this process. The process tests start a real
`serve` on loopback and attack it as a hostile client would; the figures they see are printed (`pytest -s`)
and asserted only with generous bounds.
"""

from __future__ import annotations

import gc
import io
import logging
import statistics
import threading
import time
import types
from base64 import b64encode
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from exporter.web import auth
from exporter.web.auth import PasswordChecker, Verdict, WebSecurity, parse_basic_auth
from exporter.web.config import WebConfigWatcher
from exporter.web.warning import RateLimitedWarning
from tests.processes import Process, http_get, wait_until

PASSWORD = "correct horse battery staple"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def make_hash(cost: int, password: str = PASSWORD) -> bytes:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost))


FAST = make_hash(4)


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
    """Records the cost of every bcrypt check, the most that ran at once, and can hold checks at a gate."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.costs: list[int] = []
        self.running = 0
        self.peak = 0
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self._count_lock = threading.Lock()

    def bcrypt_check(self, hashed: bytes, secret: bytes) -> bool:  # type: ignore[override]
        with self._count_lock:
            self.costs.append(int(hashed[4:6]))
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.entered.set()
        try:
            assert self.gate.wait(timeout=30)
            return PasswordChecker.bcrypt_check(hashed, secret)
        finally:
            with self._count_lock:
                self.running -= 1


def test_every_answer_is_cached_so_a_password_sent_again_costs_no_bcrypt():
    checker = CountingChecker()
    users = {"prometheus": FAST}
    for _ in range(20):
        assert checker.check(users, "prometheus", PASSWORD) is Verdict.ALLOWED
        assert checker.check(users, "prometheus", "wrong") is Verdict.REFUSED
        assert checker.check(users, "nobody", "wrong") is Verdict.REFUSED
    assert len(checker.costs) == 3


def test_the_caches_are_bounded_and_failures_cannot_push_out_successes():
    checker = CountingChecker()
    users = {"prometheus": FAST}
    assert checker.check(users, "prometheus", PASSWORD) is Verdict.ALLOWED
    for n in range(auth.CACHE_SIZE + 1):
        assert checker.check(users, "prometheus", f"wrong {n}") is Verdict.REFUSED
    checks = len(checker.costs)
    assert checker.check(users, "prometheus", PASSWORD) is Verdict.ALLOWED  # still cached
    assert checker.check(users, "prometheus", f"wrong {auth.CACHE_SIZE}") is Verdict.REFUSED  # cached
    assert checker.check(users, "prometheus", "wrong 1") is Verdict.REFUSED  # the oldest of CACHE_SIZE kept
    assert len(checker.costs) == checks
    assert checker.check(users, "prometheus", "wrong 0") is Verdict.REFUSED  # pushed out: checked again
    assert len(checker.costs) == checks + 1


def reachable(root: object) -> list[object]:
    """Every object the checker holds, however deep; classes, modules and functions are not followed."""
    seen, todo, found = {id(root)}, [root], []
    while todo:
        item = todo.pop()
        found.append(item)
        for child in gc.get_referents(item):
            if id(child) not in seen and not isinstance(
                child, type | types.ModuleType | types.FunctionType | types.BuiltinFunctionType
            ):
                seen.add(id(child))
                todo.append(child)
    return found


def test_the_checker_keeps_no_password():
    checker = PasswordChecker()
    users = {"prometheus": FAST}
    checker.check(users, "prometheus", PASSWORD)
    checker.check(users, "prometheus", "hunter2")
    checker.check(users, "nobody", "hunter3")
    held = reachable(checker)
    assert any(isinstance(item, bytes) and len(item) == 32 for item in held)  # the keys are there
    for item in held:
        if isinstance(item, str | bytes):
            text = item.encode() if isinstance(item, str) else item
            assert not any(word in text for word in (PASSWORD.encode(), b"hunter2", b"hunter3")), item


def test_an_unknown_user_costs_a_check_at_the_highest_configured_cost():
    checker = CountingChecker()
    users = {"cheap": FAST, "dear": make_hash(6)}
    assert checker.check(users, "nobody", PASSWORD) is Verdict.REFUSED
    assert checker.check(users, "dear", "wrong") is Verdict.REFUSED
    assert checker.costs == [6, 6]


def test_a_password_past_72_bytes_is_refused_though_bcrypt_would_read_its_first_72():
    long = "x" * 72
    users = {"prometheus": make_hash(4, long)}
    checker = PasswordChecker()
    assert checker.check(users, "prometheus", long) is Verdict.ALLOWED
    assert checker.check(users, "prometheus", long + "y") is Verdict.REFUSED


def test_one_check_runs_at_a_time():
    checker = CountingChecker(slot_wait=30)
    users = {"prometheus": make_hash(5)}
    threads = [
        threading.Thread(target=checker.check, args=(users, "prometheus", f"wrong {n}")) for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(checker.costs) == 8 and checker.peak == 1


def web_security(tmp_path: Path, text: str) -> WebSecurity:
    config = tmp_path / "web.yml"
    config.write_text(text)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"metrics\n"]

    return WebSecurity(app, WebConfigWatcher(config))


def users_config(users: dict[str, bytes]) -> str:
    return "basic_auth_users:\n" + "".join(f"  {user}: {hashed.decode()}\n" for user, hashed in users.items())


def call(
    security: WebSecurity, headers: dict[str, str], path: str = "/metrics"
) -> tuple[str, dict[str, str]]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> None:
        answer.update(status=status, headers=dict(headers))

    environ = {"PATH_INFO": path, "REMOTE_ADDR": "192.0.2.7", "wsgi.errors": io.StringIO()}
    environ.update({"HTTP_" + name.upper(): value for name, value in headers.items()})
    b"".join(security(environ, start_response))
    return answer["status"], answer["headers"]


def test_a_wrong_password_or_user_is_401_with_www_authenticate(tmp_path):
    security = web_security(tmp_path, users_config({"prometheus": FAST}))
    assert call(security, basic("prometheus", PASSWORD))[0] == "200 OK"
    for headers in (basic("prometheus", "wrong"), basic("nobody", PASSWORD), {}):
        status, answer = call(security, headers)
        assert status == "401 Unauthorized"
        assert answer["WWW-Authenticate"] == 'Basic realm="trueconf-exporter", charset="UTF-8"'


def test_a_request_that_gets_no_bcrypt_check_within_the_wait_is_answered_429(tmp_path, caplog):
    security = web_security(tmp_path, users_config({"prometheus": FAST}))
    checker = security.checker = CountingChecker(slot_wait=0.05)
    assert call(security, basic("prometheus", PASSWORD))[0] == "200 OK"
    checker.gate.clear()
    checker.entered.clear()
    first = threading.Thread(target=call, args=(security, basic("prometheus", "the long check")))
    first.start()
    try:
        assert checker.entered.wait(timeout=10)  # a long check holds the only slot
        with caplog.at_level(logging.WARNING, logger="exporter.web.auth"):
            started = time.monotonic()
            status, headers = call(security, basic("prometheus", "hunter2"))
            waited = time.monotonic() - started
        assert status == "429 Too Many Requests" and headers["Retry-After"] == "1"
        assert waited >= 0.05
        assert call(security, basic("prometheus", PASSWORD))[0] == "200 OK"  # cached: needs no slot
    finally:
        checker.gate.set()
        first.join(timeout=10)
    assert call(security, basic("prometheus", "hunter2"))[0] == "401 Unauthorized"
    assert checker.peak == 1
    # The long check's 401 is the first failed login; the later one waits for the next line.
    lines = [(record.getMessage().split(":")[0], record.count) for record in caplog.records]
    assert lines == [("password checks answered 429", 1), ("basic auth failed", 1)]
    assert all(record.address == "192.0.2.7" for record in caplog.records)
    assert "hunter2" not in caplog.text and "prometheus" not in caplog.text


def test_failed_logins_are_one_rate_limited_warning_without_names_or_passwords(tmp_path, caplog):
    security = web_security(tmp_path, users_config({"prometheus": FAST}))
    with caplog.at_level(logging.WARNING, logger="exporter.web.auth"):
        for n in range(30):
            assert call(security, basic(f"user-{n % 3}", f"guess-{n}"))[0] == "401 Unauthorized"
            assert call(security, basic("prometheus", f"guess-{n}"))[0] == "401 Unauthorized"
        assert call(security, {})[0] == "401 Unauthorized"  # no credentials: not a failed login
    [record] = caplog.records
    assert record.getMessage().startswith("basic auth failed")
    assert record.count == 1 and record.address == "192.0.2.7"
    assert "user-" not in caplog.text and "guess-" not in caplog.text and "prometheus" not in caplog.text


def test_the_rate_limited_warning_is_one_line_then_one_per_interval_with_the_count(caplog):
    clock = [1000.0]
    warning = RateLimitedWarning(logging.getLogger("test.warning"), "it happened", 60, lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="test.warning"):
        threads = [
            threading.Thread(target=lambda: [warning(address="a") for _ in range(50)]) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert [record.count for record in caplog.records] == [1]
        clock[0] += 60
        warning(address="b")
    assert [(record.count, record.address) for record in caplog.records] == [(1, "a"), (200, "b")]


def test_healthz_needs_the_password_unless_the_config_opens_it(tmp_path):
    closed = web_security(tmp_path, users_config({"prometheus": FAST}))
    assert call(closed, {}, "/healthz")[0] == "401 Unauthorized"
    opened = web_security(tmp_path, users_config({"prometheus": FAST}) + "healthz_without_auth: true\n")
    assert call(opened, {}, "/healthz")[0] == "200 OK"
    assert call(opened, {}, "/metrics")[0] == "401 Unauthorized"
    assert call(opened, {}, "/healthz/")[0] == "401 Unauthorized"


def test_an_edit_of_the_users_applies_to_the_next_request(tmp_path):
    security = web_security(tmp_path, users_config({"prometheus": FAST}))
    assert call(security, basic("prometheus", PASSWORD))[0] == "200 OK"  # cached from here
    (tmp_path / "web.yml").write_text(users_config({"prometheus": make_hash(4, "rotated"), "grafana": FAST}))
    assert call(security, basic("prometheus", PASSWORD))[0] == "401 Unauthorized"
    assert call(security, basic("prometheus", "rotated"))[0] == "200 OK"
    assert call(security, basic("grafana", PASSWORD))[0] == "200 OK"


# ---------------------------------------------------------------------------------------------------------
# Process tests: a real `serve` on loopback.

INSTRUMENT = '''
"""Loaded into the exporter under test only (PYTHONPATH): counts bcrypt checks running at once."""
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
'''


def serve(processes: Any, tmp_path: Path, users: dict[str, bytes], *extra: str, **options: Any) -> Process:
    config = tmp_path / "web.yml"
    config.write_text(users_config(users))
    return processes["exporter"]("--web.config.file", str(config), *extra, **options)


def timed(url: str, headers: dict[str, str]) -> tuple[int, float]:
    started = time.perf_counter()
    status = http_get(url, headers, timeout=30)[0]
    return status, time.perf_counter() - started


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
        assert wait_until(lambda: statuses[429] > 0, seconds=30)  # the queue for the one check is long now
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
        f"bcrypt at once at most {peak} ({calls} calls); attackers' answers {dict(statuses)}"
    )
    assert peak == 1
    assert statuses[401] > 0 and set(statuses) <= {401, 429}
    assert under_attack < 1.0  # generous; the figure is printed
    assert exporter.alive() and "Traceback" not in exporter.stderr


@pytest.mark.process
@pytest.mark.serial  # a ratio of bcrypt timings
def test_an_unknown_user_takes_as_long_as_a_known_one(processes, tmp_path):
    """At cost 11, not the cost 10 of the toolkit's fixed dummy: the dummy follows the configured cost."""
    users = {"prometheus": make_hash(11), "grafana": make_hash(11)}
    url = f"http://127.0.0.1:{serve(processes, tmp_path, users).ports['http']}/healthz"
    runs: dict[str, list[float]] = {"prometheus": [], "grafana": [], "nobody": []}
    for n in range(5):
        for user, seconds in runs.items():
            status, took = timed(url, basic(user if user != "nobody" else f"nobody{n}", f"wrong {n}"))
            assert status == 401
            seconds.append(took)
    medians = {user: statistics.median(seconds) for user, seconds in runs.items()}
    print(
        "\nwrong password, median of 5: "
        + ", ".join(f"{user} {seconds * 1000:.1f} ms" for user, seconds in medians.items())
    )
    assert medians["prometheus"] > 0.05  # bcrypt at cost 11 really ran
    assert 0.75 < medians["nobody"] / medians["prometheus"] < 1.33


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
def test_a_flood_of_failed_logins_is_one_line_in_the_log(processes, tmp_path):
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
    assert len(lines) == 1  # one a minute at most; the test takes a few seconds
    assert "level=warning" in lines[0] and "count=1" in lines[0]
    assert "mallory" not in exporter.stderr and "secret-guess" not in exporter.stderr
