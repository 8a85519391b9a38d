"""The exporter's HTTP server: one thread per request, optional TLS per connection, and the listen address."""

from __future__ import annotations

import io
import logging
import socket
import socketserver
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from exporter.web.app import ExporterApp
from exporter.web.auth import WebSecurity
from exporter.web.config import WebConfigError, WebConfigWatcher
from exporter.web.tls import TLSRefusedError, accept_tls

log = logging.getLogger(__name__)


class _ErrorLog(io.StringIO):
    """Where wsgiref writes the traceback of a request the app failed: it writes, then flushes once.

    Each flush becomes one error-level line of the project's log (logfmt or JSON), never bare stderr.
    """

    def flush(self) -> None:
        text = self.getvalue().rstrip()
        self.seek(0)
        self.truncate()
        if text:
            log.error(
                "request failed inside the exporter; the answer was HTTP 500", extra={"traceback": text}
            )


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the debug log and a failed request's traceback to the error log, not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)

    def get_stderr(self) -> io.StringIO:
        return _ErrorLog()


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow Room never holds up other scrapes or /healthz."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    """Room for a whole fleet's probes arriving at once (Prometheus starts every target's scrape together)."""

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family  # TCPServer.__init__ creates the socket with it, then binds
        super().__init__(address, _QuietHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is not worth a traceback on stderr."""
        log.debug("connection error", extra={"address": str(client_address)}, exc_info=True)


class TLSThreadingServer(ThreadingServer):
    """The same server, each connection wrapped in TLS with the web config's current context."""

    def __init__(
        self, address: tuple[str, int], family: socket.AddressFamily, web_config: WebConfigWatcher
    ) -> None:
        self.web_config = web_config
        super().__init__(address, family)

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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server: ThreadingServer
    if web_config is not None and web_config.current().tls is not None:
        server = TLSThreadingServer((host, port), family, web_config)
    else:
        server = ThreadingServer((host, port), family)
    server.set_app(app if web_config is None else WebSecurity(app, web_config))
    return server
