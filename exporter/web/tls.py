"""TLS for the exporter's own endpoint: each connection is wrapped with the web config's current context.

The handshake runs in the connection's own thread, so a slow or silent client never holds up `accept()`. A
client that speaks plain HTTP to the TLS port gets a one-line 400 (as Go's servers answer) and is closed.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

HANDSHAKE_TIMEOUT_SECONDS = 10.0
TLS_HANDSHAKE_RECORD = 0x16
"""The first byte of every TLS ClientHello."""
PLAIN_HTTP_ANSWER = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
    b"Client sent an HTTP request to an HTTPS server.\n"
)


class TLSRefusedError(Exception):
    """The connection did not become a TLS connection; the message says why (for the debug log)."""


def accept_tls(sock: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
    """Wrap an accepted socket and complete the handshake; TLSRefusedError (socket still open) if not."""
    sock.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
    try:
        first = sock.recv(1, socket.MSG_PEEK)
    except OSError as error:
        raise TLSRefusedError(f"no data: {error}") from None
    if not first:
        raise TLSRefusedError("closed before the handshake")
    if first[0] != TLS_HANDSHAKE_RECORD:
        if first.isalpha():
            _answer_plain_http(sock)
            raise TLSRefusedError("plain HTTP sent to the TLS port")
        raise TLSRefusedError("not a TLS handshake")
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    try:
        tls.do_handshake()
    except (OSError, ssl.SSLError) as error:
        raise TLSRefusedError(f"handshake failed: {getattr(error, 'reason', None) or error}") from None
    tls.settimeout(None)
    return tls


def _answer_plain_http(sock: socket.socket) -> None:
    """Say what went wrong, then read what the client sent so closing does not reset the connection early."""
    with contextlib.suppress(OSError):
        sock.settimeout(1.0)
        sock.recv(65536)
        sock.sendall(PLAIN_HTTP_ANSWER)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
