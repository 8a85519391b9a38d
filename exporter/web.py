"""The HTTP side: a WSGI app with `/`, `/metrics` and `/healthz`, and the threaded server that runs it.

Every `/metrics` request builds a fresh registry around a fresh collection, so overlapping scrapes never
share state. prometheus_client's own WSGI app does the content negotiation (text or OpenMetrics) and gzip.
"""

from __future__ import annotations

import html
import logging
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

from exporter import __version__
from exporter.collection import collect_room
from exporter.collector import BuildInfoCollector, RoomCollector
from exporter.room import RoomTarget

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_HEADER = "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"
SCRAPE_TIMEOUT_MARGIN_SECONDS = 0.5
"""Left for the exporter to answer after the Room's deadline, inside Prometheus's scrape timeout."""
MIN_TIMEOUT_SECONDS = 0.1

StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class ExporterSettings:
    """What `serve` was told: the Room to collect and how."""

    target: RoomTarget
    pin: str | None
    timeout_seconds: float
    process_metrics: bool = False


def effective_timeout(configured: float, scrape_timeout_header: str | None) -> float:
    """The collection deadline: the configured timeout, shortened to fit Prometheus's scrape timeout."""
    if not scrape_timeout_header:
        return configured
    try:
        scrape_timeout = float(scrape_timeout_header)
    except ValueError:
        return configured
    if scrape_timeout != scrape_timeout or scrape_timeout <= 0:  # NaN or nonsense
        return configured
    return max(MIN_TIMEOUT_SECONDS, min(configured, scrape_timeout - SCRAPE_TIMEOUT_MARGIN_SECONDS))


def landing_page(settings: ExporterSettings) -> bytes:
    """A small page naming the exporter, its version and its target (never the PIN)."""
    target = html.escape(str(settings.target))
    auth = "PIN configured" if settings.pin is not None else "no PIN (unsecured auth)"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TrueConf Room exporter</title></head>
<body>
<h1>TrueConf Room exporter</h1>
<p>Version {html.escape(__version__)}. Target: <code>{target}</code> ({auth}), timeout {settings.timeout_seconds:g}s.</p>
<ul>
<li><a href="metrics">/metrics</a>: the Room's outgoing file requests, collected at every scrape</li>
<li><a href="healthz">/healthz</a>: liveness of the exporter itself</li>
</ul>
</body></html>
""".encode()


class ExporterApp:
    """The WSGI application."""

    def __init__(self, settings: ExporterSettings) -> None:
        self.settings = settings
        self._landing_page = landing_page(settings)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "only GET and HEAD are supported\n")
        if path == "/metrics":
            return self.metrics(environ, start_response)
        if path == "/healthz":
            return _plain(start_response, "200 OK", "ok\n")
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [self._landing_page]
        return _plain(start_response, "404 Not Found", "not found; try /metrics\n")

    def metrics(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        settings = self.settings
        timeout = effective_timeout(settings.timeout_seconds, environ.get(SCRAPE_TIMEOUT_HEADER))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RoomCollector(lambda: collect_room(settings.target, settings.pin, timeout)))
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

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("http %s", format % args)


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow Room never holds up other scrapes or /healthz."""

    daemon_threads = True
    allow_reuse_address = True


def parse_listen_address(text: str) -> tuple[str, int]:
    """`:18765`, `0.0.0.0:18765`, `[::1]:18765` -> (host, port); ValueError when it is none of those."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (for example :18765 or 127.0.0.1:18765)")
    host = host.strip("[]")
    return host, int(port_text)


def make_http_server(app: ExporterApp, host: str, port: int) -> WSGIServer:
    """Bind the app; IPv6 hosts get an IPv6 socket, an empty host listens on every IPv4 address."""

    class Server(ThreadingServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return make_server(host, port, app, server_class=Server, handler_class=_QuietHandler)
