"""Basic auth and the configured response headers, as WSGI middleware in front of the exporter's app.

Passwords are checked with bcrypt against the web config's hashes. Anyone who can reach the port can send
passwords, so the checks are built to hold against a flood of them:

- **Bounded.** At most BCRYPT_SLOTS (one) bcrypt check runs at a time, as the exporter-toolkit serialises
  them with a mutex. bcrypt releases the GIL and is meant to be slow: with one slot a flood of wrong passwords
  keeps at most one core busy, so on two cores one stays for scrapes (two slots would let a flood take both,
  as it took 1.9 cores unbounded), and under a CPU quota below one core the scheduler still shares it between
  bcrypt's one thread and the scrapes' threads. Real clients need bcrypt once per password (see the cache), so
  one slot is plenty for them. A request that cannot get the slot within SLOT_WAIT_SECONDS is answered
  `429 Too Many Requests` (the status the toolkit answers when its request limiter refuses) instead of
  queueing without end.
- **Cached.** A success is remembered (least recently used, SUCCESS_CACHE_SIZE entries) so that Prometheus's
  scrape every few seconds does not pay bcrypt each time, as the toolkit does; a failure is remembered for
  FAILURE_TTL_SECONDS (FAILURE_CACHE_SIZE entries), so the same wrong password sent again costs no bcrypt.
  Both are keyed by a SHA-256 of user, hash and password, never the password itself, and kept apart, so a
  flood of failures cannot push the successes out.
- **Constant time.** The time an uncached check takes tells neither whether the user exists nor the cost of
  their hash. An unknown user is checked against a dummy hash of the highest cost among the configured users,
  so it uses a slot and a core like a real one; and every uncached check, success or failure, known or unknown
  user, lasts at least as long as a check at that highest cost usually does (the median of its recent
  durations). The difference is slept while holding the slot, and the answer cached only after it: a slot
  given back early would let a request queued behind it, or the same one sent again, time the cheap
  bcrypt. The dummy hash is made, and its check first timed, in the background at start-up (and on the first
  check after a reload raises the highest cost).
- **Counted.** Failed logins are logged as at most one warning line per LOG_INTERVAL_SECONDS, saying how many
  there were since the previous line, for how many distinct user names and from how many addresses; never a
  user name (people type their password into the wrong field) or a password.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import logging
import math
import secrets
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

import bcrypt

from exporter.web.config import WebConfig, WebConfigError, WebConfigWatcher
from exporter.web.responses import StartResponse, WSGIApp, plain_text

log = logging.getLogger(__name__)

REALM = "trueconf-exporter"
OPEN_PATH = "/healthz"

BCRYPT_SLOTS = 1
"""bcrypt checks that may run at once."""
SLOT_WAIT_SECONDS = 1.0
"""How long a check waits for a slot before the request is answered 429."""
SUCCESS_CACHE_SIZE = 256
FAILURE_CACHE_SIZE = 1024
FAILURE_TTL_SECONDS = 30.0
LOG_INTERVAL_SECONDS = 10.0
"""At most one line about failed logins per this many seconds."""
DISTINCT_LIMIT = 4096
"""Distinct user names and addresses counted per log line; past it the line says "at least"."""
REFERENCE_SAMPLES = 9
"""Recent durations of checks at the highest cost; their median is what every uncached check lasts."""
DEFAULT_COST = 12


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    BUSY = "busy"
    """No bcrypt slot came free in time: answered 429, nothing decided about the password."""


def hash_cost(hashed: bytes) -> int:
    """The cost of a bcrypt hash (`$2b$12$...` is 12)."""
    text = hashed[4:6]
    return int(text) if len(hashed) >= 7 and text.isdigit() else DEFAULT_COST


class _Reference:
    """A dummy hash at one cost, for unknown users, and how long checks at that cost have recently taken."""

    def __init__(self, cost: int, check: Callable[[bytes, bytes], bool], clock: Callable[[], float]) -> None:
        self.hashed = bcrypt.hashpw(secrets.token_urlsafe(16).encode(), bcrypt.gensalt(rounds=cost))
        self._durations: deque[float] = deque(maxlen=REFERENCE_SAMPLES)
        started = clock()
        check(self.hashed, b"not the dummy's password")
        self.record(clock() - started)

    def record(self, seconds: float) -> None:
        self._durations.append(seconds)

    def expected(self) -> float:
        return statistics.median(self._durations)


class PasswordChecker:
    """bcrypt checks through a bounded number of slots, with caches of successes and recent failures."""

    def __init__(
        self,
        slots: int = BCRYPT_SLOTS,
        slot_wait: float = SLOT_WAIT_SECONDS,
        failure_ttl: float = FAILURE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._slot_wait = slot_wait
        self._failure_ttl = failure_ttl
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._successes: OrderedDict[bytes, None] = OrderedDict()
        self._failures: OrderedDict[bytes, float] = OrderedDict()  # key -> when it expires
        self._references: dict[int, _Reference] = {}

    def check(self, users: dict[str, bytes], user: str, password: str) -> Verdict:
        hashed = users.get(user)
        secret = password.encode()
        # An unknown user's key has no hash: the dummy's is not needed to remember that it failed.
        key = hashlib.sha256(b"\0".join([user.encode(), hashed or b"-", secret])).digest()
        cached = self._cached(key)
        if cached is not None:
            return cached
        if not self._slots.acquire(timeout=self._slot_wait):
            return Verdict.BUSY
        try:
            cached = self._cached(key)  # the same password, sent again while this waited, may be known now
            if cached is not None:
                return cached
            highest = self._highest(users)
            reference = self._reference(highest)  # made once per cost, inside the slot: it is bcrypt work too
            started = self._clock()
            allowed = self.bcrypt_check(hashed or reference.hashed, secret) and hashed is not None
            if hashed is None or hash_cost(hashed) == highest:
                reference.record(self._clock() - started)
            # Padded while holding the slot, and cached only then: otherwise a request waiting for the slot,
            # or the same one sent again, would end as soon as the bcrypt did, and tell its cost.
            pause = started + reference.expected() - self._clock()
            if pause > 0:
                self._sleep(pause)
            self._remember(key, allowed)
        finally:
            self._slots.release()
        return Verdict.ALLOWED if allowed else Verdict.REFUSED

    def prepare(self, users: dict[str, bytes]) -> None:
        """Make the dummy hash for the users' highest cost now, so that the first check need not."""
        with self._slots:
            self._reference(self._highest(users))

    @staticmethod
    def _highest(users: dict[str, bytes]) -> int:
        return max((hash_cost(known) for known in users.values()), default=DEFAULT_COST)

    @staticmethod
    def bcrypt_check(hashed: bytes, secret: bytes) -> bool:
        """One bcrypt check. bcrypt reads 72 bytes at most: a longer password fails after the same work."""
        try:
            return bcrypt.checkpw(secret[:72], hashed) and len(secret) <= 72
        except ValueError:
            return False

    def _cached(self, key: bytes) -> Verdict | None:
        with self._lock:
            if key in self._successes:
                self._successes.move_to_end(key)
                return Verdict.ALLOWED
            expires = self._failures.get(key)
            if expires is None:
                return None
            if expires > self._clock():
                return Verdict.REFUSED
            del self._failures[key]
            return None

    def _remember(self, key: bytes, allowed: bool) -> None:
        with self._lock:
            if allowed:
                self._successes[key] = None
                self._successes.move_to_end(key)
                while len(self._successes) > SUCCESS_CACHE_SIZE:
                    self._successes.popitem(last=False)
                return
            self._failures[key] = self._clock() + self._failure_ttl
            self._failures.move_to_end(key)
            while len(self._failures) > FAILURE_CACHE_SIZE:
                self._failures.popitem(last=False)

    def _reference(self, cost: int) -> _Reference:
        with self._lock:
            reference = self._references.get(cost)
        if reference is None:
            reference = _Reference(cost, self.bcrypt_check, self._clock)
            with self._lock:
                reference = self._references.setdefault(cost, reference)
        return reference


class FailureLog:
    """Failed logins as at most one warning line per interval: how many, for how many user names, from where.

    The first failure after a quiet interval is logged at once; later ones are counted and written when the
    interval ends (by a timer, so a burst that stops is still reported). User names are counted by a digest
    and never written.
    """

    def __init__(
        self, interval: float = LOG_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last_line = -math.inf
        self._timer: threading.Timer | None = None
        self._failures = 0
        self._busy = 0
        self._users: set[bytes] = set()
        self._addresses: set[str] = set()
        self._address = ""

    def failed(self, user: str, address: str) -> None:
        self._note(address, user=user)

    def busy(self, address: str) -> None:
        self._note(address)

    def _note(self, address: str, user: str | None = None) -> None:
        with self._lock:
            if user is None:
                self._busy += 1
            else:
                self._failures += 1
                if len(self._users) < DISTINCT_LIMIT:
                    self._users.add(hashlib.sha256(user.encode()).digest())
            if len(self._addresses) < DISTINCT_LIMIT:
                self._addresses.add(address)
            self._address = address
            now = self._clock()
            if now - self._last_line >= self._interval:
                detail = self._take(now)
            else:
                detail = None
                if self._timer is None:
                    self._timer = threading.Timer(self._last_line + self._interval - now, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
        if detail is not None:
            self._write(detail)

    def flush(self) -> None:
        """Write the counts gathered since the last line, if any (the timer calls this)."""
        with self._lock:
            self._timer = None
            detail = self._take(self._clock()) if self._failures or self._busy else None
        if detail is not None:
            self._write(detail)

    def _take(self, now: float) -> tuple[str, str]:
        def count(items: set[Any]) -> str:
            return f"at least {DISTINCT_LIMIT}" if len(items) >= DISTINCT_LIMIT else str(len(items))

        parts = []
        if self._failures:
            parts.append(
                f"{self._failures} failed login{'s' if self._failures != 1 else ''} "
                f"for {count(self._users)} distinct user name{'s' if len(self._users) != 1 else ''}"
            )
        if self._busy:
            parts.append(f"{self._busy} refused with 429 while bcrypt was busy")
        text = "; ".join(parts) + f", from {count(self._addresses)} address"
        text += "es" if len(self._addresses) != 1 else ""
        if self._last_line > -math.inf:
            text += f", in the last {now - self._last_line:.0f} s"
        detail = (text, self._address)
        self._failures = self._busy = 0
        self._users.clear()
        self._addresses.clear()
        self._last_line = now
        return detail

    @staticmethod
    def _write(detail: tuple[str, str]) -> None:
        text, address = detail
        log.warning("basic auth failed", extra={"detail": text, "address": address})


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header; None when absent or malformed."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class WebSecurity:
    """Wraps the app: the configured headers on every answer, basic auth where the web config asks for it."""

    def __init__(self, app: WSGIApp, watcher: WebConfigWatcher) -> None:
        self.app = app
        self.watcher = watcher
        self.checker = PasswordChecker()
        self.failures = FailureLog()
        try:
            users = watcher.current().basic_auth_users
        except WebConfigError:
            users = {}
        if users:  # a second or so of bcrypt at start-up, in the background, instead of in the first request
            threading.Thread(
                target=self.checker.prepare, args=(users,), name="bcrypt-prepare", daemon=True
            ).start()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            config = self.watcher.current()
        except WebConfigError:
            return plain_text(
                start_response,
                "500 Internal Server Error",
                "the web config file is invalid; see the exporter's log\n",
            )

        def with_headers(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            return start_response(status, [*headers, *config.headers], *exc_info)

        verdict = self._authorise(config, environ)
        if verdict is Verdict.BUSY:
            return plain_text(
                with_headers,
                "429 Too Many Requests",
                "429 Too Many Requests: too many password checks at once; retry later\n",
                headers=(("Retry-After", "1"),),
            )
        if verdict is Verdict.REFUSED:
            return plain_text(
                with_headers,
                "401 Unauthorized",
                "401 Unauthorized\n",
                headers=(("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),),
            )
        return self.app(environ, with_headers)

    def _authorise(self, config: WebConfig, environ: dict[str, Any]) -> Verdict:
        if not config.basic_auth_users:
            return Verdict.ALLOWED
        if config.healthz_without_auth and environ.get("PATH_INFO") == OPEN_PATH:
            return Verdict.ALLOWED
        credentials = parse_basic_auth(environ.get("HTTP_AUTHORIZATION"))
        if credentials is None:
            return Verdict.REFUSED  # a browser's first request: not a failed login
        user, password = credentials
        verdict = self.checker.check(config.basic_auth_users, user, password)
        address = str(environ.get("REMOTE_ADDR", ""))
        if verdict is Verdict.REFUSED:
            self.failures.failed(user, address)
        elif verdict is Verdict.BUSY:
            self.failures.busy(address)
        return verdict
