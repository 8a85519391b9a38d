"""`--web.config.file`: the exporter-toolkit web configuration (TLS and basic auth), validated and watched.

    tls_server_config:
      cert_file: server.crt             # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (default), VerifyClientCertIfGiven
      client_ca_file: clients-ca.crt
      min_version: TLS12                # TLS10..TLS13; TLS12 by default, as in the toolkit
      max_version: TLS13
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000, X-Frame-Options: deny}
    basic_auth_users:
      prometheus: $2b$12$...            # bcrypt hashes only
    rate_limit:                         # a token bucket over every request, before basic auth: 429 past it
      interval: 1s                      # one request's worth of tokens per interval; 0 (or none) turns it off
      burst: 10                         # the bucket's size, full at start
    healthz_without_auth: true          # this exporter's extension: /healthz without password (default false)

Unknown keys are an error. Keys the toolkit knows but this exporter cannot honour (`cipher_suites`,
`curve_preferences`, `client_allowed_sans`, inline `cert`/`key`/`client_ca`, and the client-auth types that
accept unverified certificates) are an error too, with a message saying so: never silently weaker.

Like the Go exporters, the file (and the certificate files it names) is re-read whenever its contents change:
checked for every connection and every request. If an edit leaves it invalid, requests fail closed (500 or a
refused TLS handshake) and the error is logged until it is fixed. An edit that switches TLS on or off is
refused with an error line (the listener is TLS or plain from start-up, so that needs a restart): the running
web config, TLS settings included, keeps serving.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from exporter.files.yamlfile import YamlFileError, file_named_in, read_yaml, reject_unknown_keys

log = logging.getLogger(__name__)

TOP_LEVEL_KEYS = (
    "tls_server_config",
    "http_server_config",
    "basic_auth_users",
    "rate_limit",
    "healthz_without_auth",
)
TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
)
TLS_UNSUPPORTED = ("cert", "key", "client_ca", "client_allowed_sans", "cipher_suites", "curve_preferences")
HTTP_KEYS = ("headers", "http2")
ALLOWED_HEADERS = (
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
)
"""The response headers the exporter-toolkit lets a web config set."""
HEADER_VALUES = MappingProxyType(
    {"X-Content-Type-Options": ("nosniff",), "X-Frame-Options": ("deny", "sameorigin")}
)
"""The headers whose values the toolkit restricts, and the values it allows (compared here ignoring case)."""
RATE_LIMIT_KEYS = ("interval", "burst")
GO_DURATION = re.compile(r"^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$")
GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
GO_DURATION_UNITS = MappingProxyType(
    {
        "ns": 1e-9,
        "us": 1e-6,
        "µs": 1e-6,
        "μs": 1e-6,
        "ms": 1e-3,
        "s": 1.0,
        "m": 60.0,
        "h": 3600.0,
    }
)
"""`rate_limit.interval` is a Go duration, as the toolkit reads it: `1s`, `500ms`, `1m30s`, `0`."""
TLS_VERSIONS = MappingProxyType(
    {
        "TLS10": ssl.TLSVersion.TLSv1,
        "TLS11": ssl.TLSVersion.TLSv1_1,
        "TLS12": ssl.TLSVersion.TLSv1_2,
        "TLS13": ssl.TLSVersion.TLSv1_3,
    }
)
CLIENT_AUTH = MappingProxyType(
    {
        "NoClientCert": ssl.CERT_NONE,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }
)
CLIENT_AUTH_UNSUPPORTED = ("RequestClientCert", "RequireAnyClientCert")
BCRYPT_HASH = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")


class WebConfigError(YamlFileError):
    """The web config cannot be used. `str()` is one line: `FILE: KEY: PROBLEM`."""


@dataclass(frozen=True)
class TLSSettings:
    cert_file: Path
    key_file: Path
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    client_ca_file: Path | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion | None = None

    def files(self) -> Iterator[Path]:
        yield self.cert_file
        yield self.key_file
        if self.client_ca_file is not None:
            yield self.client_ca_file


@dataclass(frozen=True)
class RateLimit:
    """`rate_limit`: a bucket of `burst` tokens, one more every `interval_seconds` (as x/time/rate)."""

    interval_seconds: float
    burst: int


@dataclass(frozen=True)
class WebConfig:
    """A validated web config; `context` is the server-side SSLContext when TLS is on."""

    tls: TLSSettings | None = None
    basic_auth_users: dict[str, bytes] = field(default_factory=dict)
    healthz_without_auth: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    context: ssl.SSLContext | None = None
    rate_limit: RateLimit | None = None
    """None when the file sets no limit (or `interval: 0`)."""


def load_web_config(path: Path | str) -> WebConfig:
    """Read and validate the web config (loading its certificates); WebConfigError on the first mistake."""
    path = Path(path)
    document = read_yaml(path, WebConfigError)
    if document is None:
        return WebConfig()
    if not isinstance(document, dict):
        raise WebConfigError(path, None, "expected a mapping (tls_server_config, basic_auth_users, ...)")
    reject_unknown_keys(path, "", document, TOP_LEVEL_KEYS, WebConfigError)
    tls = _tls(path, document.get("tls_server_config"))
    users = _users(path, document.get("basic_auth_users"))
    healthz_open = document.get("healthz_without_auth", False)
    if not isinstance(healthz_open, bool):
        raise WebConfigError(path, "healthz_without_auth", "must be true or false")
    headers = _http(path, document.get("http_server_config"))
    rate_limit = _rate_limit(path, document.get("rate_limit"))
    context = _context(path, tls) if tls is not None else None
    return WebConfig(
        tls=tls,
        basic_auth_users=users,
        healthz_without_auth=healthz_open,
        headers=headers,
        context=context,
        rate_limit=rate_limit,
    )


def _tls(path: Path, section: Any) -> TLSSettings | None:
    if section is None:
        return None
    key = "tls_server_config"
    if not isinstance(section, dict):
        raise WebConfigError(path, key, "must be a mapping")
    for name in section:
        if name in TLS_UNSUPPORTED:
            raise WebConfigError(
                path, f"{key}.{name}", "is an exporter-toolkit key this exporter does not support; remove it"
            )
    reject_unknown_keys(path, f"{key}.", section, TLS_KEYS, WebConfigError)
    for required in ("cert_file", "key_file"):
        if not section.get(required):
            raise WebConfigError(path, f"{key}.{required}", "missing; TLS needs both cert_file and key_file")
    auth_name = section.get("client_auth_type") or "NoClientCert"
    if auth_name in CLIENT_AUTH_UNSUPPORTED:
        raise WebConfigError(
            path,
            f"{key}.client_auth_type",
            f"{auth_name} accepts unverified certificates and is "
            "not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert",
        )
    if auth_name not in CLIENT_AUTH:
        raise WebConfigError(
            path,
            f"{key}.client_auth_type",
            f"unknown value {auth_name!r}; expected one of {', '.join(CLIENT_AUTH)}",
        )
    client_auth = CLIENT_AUTH[auth_name]
    ca_file = (
        _file(path, f"{key}.client_ca_file", section["client_ca_file"])
        if section.get("client_ca_file")
        else None
    )
    if client_auth is not ssl.CERT_NONE and ca_file is None:
        raise WebConfigError(
            path, f"{key}.client_ca_file", f"missing; {auth_name} needs the CA that signs client certificates"
        )
    if client_auth is ssl.CERT_NONE and ca_file is not None:
        raise WebConfigError(
            path,
            f"{key}.client_auth_type",
            "client_ca_file is set but client certificates are "
            "not checked; set RequireAndVerifyClientCert or VerifyClientCertIfGiven",
        )
    min_version = _version(path, f"{key}.min_version", section.get("min_version", "TLS12"))
    max_version = (
        _version(path, f"{key}.max_version", section["max_version"]) if "max_version" in section else None
    )
    if max_version is not None and max_version < min_version:
        raise WebConfigError(path, f"{key}.max_version", "is lower than min_version")
    return TLSSettings(
        cert_file=_file(path, f"{key}.cert_file", section["cert_file"]),
        key_file=_file(path, f"{key}.key_file", section["key_file"]),
        client_auth=client_auth,
        client_ca_file=ca_file,
        min_version=min_version,
        max_version=max_version,
    )


def _version(path: Path, key: str, value: Any) -> ssl.TLSVersion:
    if value not in TLS_VERSIONS:
        raise WebConfigError(
            path, key, f"unknown TLS version {value!r}; expected one of {', '.join(TLS_VERSIONS)}"
        )
    return TLS_VERSIONS[value]


def _file(path: Path, key: str, value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise WebConfigError(path, key, "must be a file name")
    resolved = file_named_in(path, value.strip())
    if not resolved.is_file():
        raise WebConfigError(path, key, f"{resolved} does not exist or is not a file")
    return resolved


def _context(path: Path, tls: TLSSettings) -> ssl.SSLContext:
    """The server-side SSLContext; loading the files here turns a bad certificate into a start-up error."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.minimum_version = tls.min_version
        if tls.max_version is not None:
            context.maximum_version = tls.max_version
    except (ValueError, ssl.SSLError) as error:
        raise WebConfigError(path, "tls_server_config.min_version", f"not available here: {error}") from None
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as error:
        raise WebConfigError(
            path,
            "tls_server_config.cert_file",
            f"cannot load {tls.cert_file} with {tls.key_file}: {getattr(error, 'reason', None) or error}",
        ) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.client_ca_file))
        except (OSError, ssl.SSLError) as error:
            raise WebConfigError(
                path,
                "tls_server_config.client_ca_file",
                f"cannot load {tls.client_ca_file}: {getattr(error, 'reason', None) or error}",
            ) from None
    context.verify_mode = tls.client_auth
    return context


def _users(path: Path, section: Any) -> dict[str, bytes]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise WebConfigError(path, "basic_auth_users", "must be a mapping of user name to bcrypt hash")
    users = {}
    for user, hashed in section.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError(
                path, "basic_auth_users", "a user name must be a non-empty string without ':'"
            )
        if not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed.strip()):
            raise WebConfigError(
                path,
                f"basic_auth_users.{user}",
                "is not a bcrypt hash ($2a$, $2b$ or $2y$, 60 "
                "characters); make one with: htpasswd -nBC 12 '' | tr -d ':\\n'",
            )
        users[user] = hashed.strip().encode()
    return users


def _http(path: Path, section: Any) -> tuple[tuple[str, str], ...]:
    if section is None:
        return ()
    if not isinstance(section, dict):
        raise WebConfigError(path, "http_server_config", "must be a mapping")
    reject_unknown_keys(path, "http_server_config.", section, HTTP_KEYS, WebConfigError)
    if "http2" in section and not isinstance(section["http2"], bool):
        raise WebConfigError(
            path,
            "http_server_config.http2",
            "must be true or false (it is accepted and ignored: this exporter serves HTTP/1.1)",
        )
    headers = section.get("headers") or {}
    if not isinstance(headers, dict):
        raise WebConfigError(path, "http_server_config.headers", "must be a mapping of header name to value")
    result = []
    for name, value in headers.items():
        canonical = {h.lower(): h for h in ALLOWED_HEADERS}.get(str(name).lower())
        if canonical is None:
            raise WebConfigError(
                path,
                f"http_server_config.headers.{name}",
                f"not settable; allowed: {', '.join(ALLOWED_HEADERS)}",
            )
        if not isinstance(value, str) or not value.isprintable():
            raise WebConfigError(path, f"http_server_config.headers.{name}", "must be a one-line string")
        allowed = HEADER_VALUES.get(canonical)
        if allowed is not None and value not in allowed:  # exactly, as the toolkit compares
            raise WebConfigError(
                path,
                f"http_server_config.headers.{name}",
                f"must be {' or '.join(allowed)}, as in the toolkit",
            )
        result.append((canonical, value))
    return tuple(result)


def _rate_limit(path: Path, section: Any) -> RateLimit | None:
    """`rate_limit` as the toolkit reads it (`interval: 0` or no interval: no limit), refusing what would
    silently do something else: a burst without an interval, a negative interval, a burst below 1 (the
    toolkit's limiter would then refuse every request)."""
    key = "rate_limit"
    if section is None:
        return None
    if not isinstance(section, dict):
        raise WebConfigError(path, key, "must be a mapping with interval and burst")
    reject_unknown_keys(path, f"{key}.", section, RATE_LIMIT_KEYS, WebConfigError)
    if "interval" not in section:
        if "burst" in section:
            raise WebConfigError(
                path, f"{key}.interval", "missing; burst needs an interval (0 turns the limit off)"
            )
        return None
    interval = _go_duration(path, f"{key}.interval", section["interval"])
    burst = section.get("burst")
    if interval == 0:
        if burst is not None and (not isinstance(burst, int) or isinstance(burst, bool) or burst < 0):
            raise WebConfigError(path, f"{key}.burst", "must be a whole number")
        return None
    if burst is None:
        raise WebConfigError(path, f"{key}.burst", "missing; how many requests may come at once (1 or more)")
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
        raise WebConfigError(
            path, f"{key}.burst", "must be a whole number of 1 or more (0 refuses every request)"
        )
    return RateLimit(interval, burst)


def _go_duration(path: Path, key: str, value: Any) -> float:
    """Seconds from a Go duration (`1s`, `500ms`, `1m30s`, `0`): the toolkit's `time.Duration`."""
    if value == 0 and not isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise WebConfigError(
            path, key, "needs a unit: a duration such as 1s, 500ms or 1m30s (0 turns it off)"
        )
    if not isinstance(value, str):
        raise WebConfigError(
            path, key, f"must be a duration such as 1s, 500ms or 1m30s, found a {type(value).__name__}"
        )
    text = value.strip()
    if text.startswith("-"):
        raise WebConfigError(path, key, "must not be negative")
    text = text.removeprefix("+")
    if text == "0":
        return 0.0
    if not GO_DURATION.match(text):
        raise WebConfigError(
            path, key, "must be a duration such as 1s, 500ms or 1m30s (units ns, us, ms, s, m, h)"
        )
    return sum(float(number) * GO_DURATION_UNITS[unit] for number, unit in GO_DURATION_PART.findall(text))


class WebConfigWatcher:
    """The current web config, re-read whenever the file or a certificate file it names changes.

    `current()` reads the few small files and compares a digest, so an edit takes effect on the next
    connection or request. An invalid edit raises WebConfigError from `current()` (fail closed) and is
    logged once. An edit that adds or removes tls_server_config is logged once at error level and not
    applied: the running config stays current until the exporter restarts (or the edit is undone).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._config = load_web_config(self.path)  # WebConfigError at start-up stops `serve`
        self._digest = self._fingerprint(self._config)
        self._broken: tuple[bytes, str] | None = None

    def current(self) -> WebConfig:
        with self._lock:
            digest = self._fingerprint(self._config)
            if digest == self._digest:
                return self._config
            if self._broken is not None and self._broken[0] == digest:
                raise WebConfigError(self.path, None, self._broken[1])
            try:
                config = load_web_config(self.path)
            except WebConfigError as error:
                self._broken = (digest, str(error))
                log.error(
                    "web config is invalid; refusing requests until it is fixed",
                    extra={"file": str(self.path), "detail": str(error)},
                )
                raise
            if (config.tls is None) != (self._config.tls is None):
                self._digest, self._broken = digest, None
                switch = "off" if config.tls is None else "on"
                log.error(
                    f"web config switches TLS {switch}, which needs a restart: the edit is not applied and "
                    "the running web config keeps serving until the exporter restarts",
                    extra={"file": str(self.path)},
                )
                return self._config
            self._config, self._digest, self._broken = config, self._fingerprint(config), None
            log.info("web config reloaded", extra={"file": str(self.path)})
            return config

    def _fingerprint(self, config: WebConfig) -> bytes:
        """A digest of the web config file and the certificate files the running config names."""
        digest = hashlib.sha256()
        files = [self.path, *(config.tls.files() if config.tls is not None else ())]
        for name in files:
            try:
                digest.update(name.read_bytes())
            except OSError as error:
                digest.update(f"unreadable {name}: {error}".encode())
            digest.update(b"\0")
        return digest.digest()
