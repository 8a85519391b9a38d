"""The HTTP side: a WSGI app (`/`, `/metrics`, `/probe`, `/-/reload`, `/healthz`) and the threaded server.

Every `/metrics` or `/probe` request builds a fresh registry around a fresh collection, so overlapping scrapes
never share state. prometheus_client's own WSGI app does the content negotiation (text or OpenMetrics) and
gzip.

Without `--config.file`, `/metrics` collects the one Room from the flags. With it, `/metrics` carries only the
exporter's own metrics (build info, config reload status, process metrics when enabled) and Rooms are
collected through `/probe?target=...&module=...`; `POST /-/reload` re-reads the config file.
"""

from __future__ import annotations

import logging
import math
import socket
import socketserver
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from exporter.collection import Collection, collect_room
from exporter.collector import BuildInfoCollector, RoomCollector
from exporter.pages import landing_page
from exporter.probe import probe_app
from exporter.reload import ConfigHolder, ReloadCollector
from exporter.room import RoomTarget
from exporter.room.frames import DEFAULT_MAX_MESSAGE_BYTES
from exporter.tls import TLSRefusedError, accept_tls
from exporter.webauth import WebSecurity
from exporter.webconfig import WebConfigError, WebConfigWatcher

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_HEADER = "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"
SCRAPE_TIMEOUT_MARGIN_SECONDS = 0.5
"""Left for the exporter to answer after the Room's deadline, inside Prometheus's scrape timeout."""
MIN_SCRAPE_DEADLINE_SECONDS = 0.1
"""The shortest deadline a tight scrape-timeout header can leave a collection."""

StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class ExporterSettings:
    """What `serve` was told: the Room to collect and how."""

    target: RoomTarget
    pin: str | None
    timeout_seconds: float
    process_metrics: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


def effective_timeout(configured: float, scrape_timeout_header: str | None) -> float:
    """The collection deadline: the configured timeout, shortened to fit Prometheus's scrape timeout."""
    if not scrape_timeout_header:
        return configured
    try:
        scrape_timeout = float(scrape_timeout_header)
    except ValueError:
        return configured
    if math.isnan(scrape_timeout) or scrape_timeout <= 0:
        return configured
    return max(MIN_SCRAPE_DEADLINE_SECONDS, min(configured, scrape_timeout - SCRAPE_TIMEOUT_MARGIN_SECONDS))


class ExporterApp:
    """The WSGI application; `config` switches it from the one flag-given Room to the multi-target mode."""

    def __init__(self, settings: ExporterSettings, config: ConfigHolder | None = None) -> None:
        self.settings = settings
        self.config = config

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/-/reload":
            return self.reload(method, start_response)
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "only GET and HEAD are supported\n")
        if path == "/metrics":
            return self.metrics(environ, start_response)
        if path == "/probe":
            return self.probe(environ, start_response)
        if path == "/healthz":
            return _plain(start_response, "200 OK", "ok\n")
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing_page(self.settings, self.config)]
        return _plain(start_response, "404 Not Found", "not found; try /metrics\n")

    def collect(self, target: RoomTarget, pin: str | None, timeout: float) -> Collection:
        """One collection, for /metrics and /probe alike: the one place collection settings are applied."""
        return collect_room(target, pin, timeout, self.settings.max_message_bytes)

    def probe(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.config is None:
            return _plain(
                start_response,
                "404 Not Found",
                "/probe needs --config.file (modules and allowed_targets); without it, use /metrics\n",
            )
        scrape_timeout = environ.get(SCRAPE_TIMEOUT_HEADER)
        return probe_app(
            environ,
            start_response,
            self.config.config,
            lambda configured: effective_timeout(configured, scrape_timeout),
            self.collect,
        )

    def reload(self, method: str, start_response: StartResponse) -> Iterable[bytes]:
        if method != "POST":
            start_response(
                "405 Method Not Allowed", [("Content-Type", "text/plain; charset=utf-8"), ("Allow", "POST")]
            )
            return [b"use POST to reload the config file\n"]
        if self.config is None:
            return _plain(
                start_response,
                "400 Bad Request",
                "nothing to reload: serve was started without --config.file\n",
            )
        error = self.config.reload()
        if error is not None:
            return _plain(
                start_response,
                "500 Internal Server Error",
                f"reload failed, the previous config stays in use: {error}\n",
            )
        return _plain(start_response, "200 OK", "config reloaded\n")

    def metrics(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        settings = self.settings
        timeout = effective_timeout(settings.timeout_seconds, environ.get(SCRAPE_TIMEOUT_HEADER))
        registry = CollectorRegistry(auto_describe=False)
        if self.config is None:
            registry.register(RoomCollector(lambda: self.collect(settings.target, settings.pin, timeout)))
        else:
            registry.register(ReloadCollector(self.config))
        registry.register(BuildInfoCollector())
        if settings.process_metrics:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        return make_wsgi_app(registry)(environ, start_response)


def _plain(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [text.encode()]


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the debug log, not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow Room never holds up other scrapes or /healthz."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    """Room for a whole fleet's probes arriving at once (Prometheus starts every target's scrape together)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is not worth a traceback on stderr."""
        log.debug("connection error", extra={"address": str(client_address)}, exc_info=True)


class TLSThreadingServer(ThreadingServer):
    """The same server, each connection wrapped in TLS with the web config's current context."""

    web_config: WebConfigWatcher

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            context = self.web_config.current().context
            if context is None:
                raise TLSRefusedError("the web config lost tls_server_config; restart to serve plain HTTP")
            request = accept_tls(request, context)
        except (TLSRefusedError, WebConfigError) as error:
            log.debug("TLS connection refused", extra={"address": str(client_address), "detail": str(error)})
            self.shutdown_request(request)
            return
        super().process_request_thread(request, client_address)


def parse_listen_address(text: str) -> tuple[str, int]:
    """`:18765`, `0.0.0.0:18765`, `[::1]:18765` -> (host, port); ValueError when it is none of those."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (for example :18765 or 127.0.0.1:18765)")
    host = host.strip("[]")
    return host, int(port_text)


def make_http_server(
    app: ExporterApp, host: str, port: int, web_config: WebConfigWatcher | None = None
) -> WSGIServer:
    """Bind the app; IPv6 hosts get an IPv6 socket, an empty host listens on every IPv4 address.

    With a web config, every request passes its basic auth, and TLS is on when the config has
    tls_server_config at start-up (certificates and settings may change later; TLS on/off needs a restart).
    """
    tls = web_config is not None and web_config.current().tls is not None
    base = TLSThreadingServer if tls else ThreadingServer

    class Server(base):  # type: ignore[valid-type, misc]
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    wsgi_app: Any = app if web_config is None else WebSecurity(app, web_config)
    server = make_server(host, port, wsgi_app, server_class=Server, handler_class=_QuietHandler)
    if tls:
        server.web_config = web_config  # type: ignore[attr-defined]
    return server
