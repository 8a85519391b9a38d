"""Basic auth and the configured response headers, as WSGI middleware in front of the exporter's app.

Passwords are checked as the exporter-toolkit checks them:

- One bcrypt check at a time (a lock): a flood of wrong passwords keeps at most one core busy. A request
  that cannot get the lock within SLOT_WAIT_SECONDS is answered `429 Too Many Requests` instead of queueing
  without end.
- Each answer is remembered, successes and failures apart (CACHE_SIZE each, least recently used out), so a
  scrape every few seconds, or a stale password sent again, pays bcrypt once, and failures cannot push the
  successes out. The keys are a keyed BLAKE2b of user, hash and password, never the password.
- An unknown user is checked against a dummy hash of the highest cost among the configured users, so it
  costs what a known user at that cost does.
- Failed logins, and the 429s, are each a rate-limited warning: never a user name or a password.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import logging
import secrets
import threading
from collections.abc import Iterable
from typing import Any

import bcrypt

from exporter.lru import LruCache
from exporter.web.config import WebConfig, WebConfigError, WebConfigWatcher
from exporter.web.responses import StartResponse, WSGIApp, plain_text
from exporter.web.warning import RateLimitedWarning

log = logging.getLogger(__name__)

REALM = "trueconf-exporter"
OPEN_PATH = "/healthz"
SLOT_WAIT_SECONDS = 1.0
"""How long a check waits for the bcrypt lock before the request is answered 429."""
CACHE_SIZE = 256
"""Remembered successes, and apart from them remembered failures."""
MAX_PASSWORD_BYTES = 72
"""bcrypt reads no further: a longer password is refused without a check, as Go's bcrypt refuses it."""
DUMMY_TAIL = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=4))[7:]
"""The salt and digest of a hash whose password nobody knows; after `$2b$NN$`, a dummy of any cost."""


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    BUSY = "busy"
    """The bcrypt lock did not come free in time: answered 429, nothing decided about the password."""


def dummy_hash(users: dict[str, bytes]) -> bytes:
    """A hash no password matches, at the highest cost among the users' hashes (`$2b$12$...` is 12)."""
    return b"$2b$%02d$" % max((int(hashed[4:6]) for hashed in users.values()), default=10) + DUMMY_TAIL


class PasswordChecker:
    """bcrypt checks one at a time, with a bounded cache of successes and one of failures."""

    def __init__(self, slot_wait: float = SLOT_WAIT_SECONDS) -> None:
        self._slot = threading.Lock()
        self._slot_wait = slot_wait
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._caches: dict[Verdict, LruCache[bytes, Verdict]] = {
            verdict: LruCache(CACHE_SIZE) for verdict in (Verdict.ALLOWED, Verdict.REFUSED)
        }
        """Successes and failures apart, so failures cannot push successes out; a key maps to its verdict."""

    def check(self, users: dict[str, bytes], user: str, password: str) -> Verdict:
        hashed = users.get(user)
        secret = password.encode()
        if len(secret) > MAX_PASSWORD_BYTES:
            return Verdict.REFUSED
        # The user name in hex cannot hold the separator; the hash cannot; the password comes last.
        text = b"\0".join([user.encode().hex().encode(), hashed or b"", secret])
        key = hashlib.blake2b(text, key=self._key, digest_size=32).digest()
        if (cached := self._cached(key)) is not None:
            return cached
        if not self._slot.acquire(timeout=self._slot_wait):
            return Verdict.BUSY
        try:
            if (cached := self._cached(key)) is not None:  # sent again while this one waited
                return cached
            allowed = self.bcrypt_check(hashed or dummy_hash(users), secret) and hashed is not None
            verdict = Verdict.ALLOWED if allowed else Verdict.REFUSED
            with self._lock:
                self._caches[verdict].put(key, verdict)
        finally:
            self._slot.release()
        return verdict

    @staticmethod
    def bcrypt_check(hashed: bytes, secret: bytes) -> bool:
        try:
            return bcrypt.checkpw(secret, hashed)
        except ValueError:
            return False

    def _cached(self, key: bytes) -> Verdict | None:
        with self._lock:
            for cache in self._caches.values():
                if (verdict := cache.get(key)) is not None:
                    return verdict
        return None


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
        self.failed = RateLimitedWarning(
            log, "basic auth failed: a wrong password or user name, answered 401"
        )
        self.busy = RateLimitedWarning(
            log, f"password checks answered 429: no bcrypt check came free within {SLOT_WAIT_SECONDS:g} s"
        )

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
        verdict = self.checker.check(config.basic_auth_users, *credentials)
        if verdict is not Verdict.ALLOWED:
            warning = self.busy if verdict is Verdict.BUSY else self.failed
            warning(address=str(environ.get("REMOTE_ADDR", "")))
        return verdict
