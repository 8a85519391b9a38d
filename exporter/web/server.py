"""The exporter's HTTP server: one thread per request, optional TLS per connection, and the listen address."""

from __future__ import annotations

import logging
import socket
import socketserver
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from exporter.web.app import ExporterApp
from exporter.web.auth import WebSecurity
from exporter.web.config import WebConfigError, WebConfigWatcher
from exporter.web.tls import TLSRefusedError, accept_tls

log = logging.getLogger(__name__)


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
