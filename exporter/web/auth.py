"""Basic auth and the configured response headers, as WSGI middleware in front of the exporter's app.

Passwords are checked with bcrypt against the web config's hashes. An unknown user is checked against a
dummy hash of the same cost, so a wrong user name takes as long as a wrong password. A successful check is
remembered (keyed by a SHA-256 of user, hash and password) so that Prometheus's scrape every few seconds does
not pay bcrypt's deliberate slowness each time, as the exporter-toolkit does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import bcrypt

from exporter.web.config import WebConfig, WebConfigError, WebConfigWatcher
from exporter.web.responses import StartResponse, WSGIApp, plain_text

log = logging.getLogger(__name__)

REALM = "trueconf-exporter"
CACHE_SIZE = 256
OPEN_PATH = "/healthz"


class PasswordChecker:
    """Constant-effort bcrypt checks with a small cache of successes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._dummies: dict[bytes, bytes] = {}

    def check(self, users: dict[str, bytes], user: str, password: str) -> bool:
        hashed = users.get(user)
        secret = password.encode()
        if hashed is None:
            # Same work for a user who does not exist, so the answer time does not tell user names apart.
            self._bcrypt(self._dummy(next(iter(users.values()), b"")), secret)
            return False
        key = hashlib.sha256(b"\0".join([user.encode(), hashed, secret])).digest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return True
        if not self._bcrypt(hashed, secret):
            return False
        with self._lock:
            self._cache[key] = None
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return True

    @staticmethod
    def _bcrypt(hashed: bytes, secret: bytes) -> bool:
        try:
            return bcrypt.checkpw(secret[:72], hashed) and len(secret) <= 72
        except ValueError:
            return False

    def _dummy(self, like: bytes) -> bytes:
        """A hash of a random string with the same cost as `like` (a real user's hash)."""
        cost = int(like[4:6]) if len(like) >= 6 and like[4:6].isdigit() else 12
        with self._lock:
            dummy = self._dummies.get(like[:7])
        if dummy is None:
            dummy = bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=cost))
            with self._lock:
                self._dummies[like[:7]] = dummy
        return dummy


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

        if not self._authorised(config, environ):
            return plain_text(
                with_headers,
                "401 Unauthorized",
                "401 Unauthorized\n",
                headers=(("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),),
            )
        return self.app(environ, with_headers)

    def _authorised(self, config: WebConfig, environ: dict[str, Any]) -> bool:
        if not config.basic_auth_users:
            return True
        if config.healthz_without_auth and environ.get("PATH_INFO") == OPEN_PATH:
            return True
        credentials = parse_basic_auth(environ.get("HTTP_AUTHORIZATION"))
        if credentials is None:
            return False
        user, password = credentials
        if self.checker.check(config.basic_auth_users, user, password):
            return True
        # No user name in the log: people type their password into the wrong field.
        log.info("basic auth failed", extra={"address": environ.get("REMOTE_ADDR", "")})
        return False
