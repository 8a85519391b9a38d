"""TLS for the exporter's own endpoint: the first bytes decide, and OpenSSL speaks through memory BIOs.

Each connection is wrapped with the web config's current SSLContext, so renewed certificates apply to the next
connection without a restart. The first bytes a client sends decide: a TLS handshake record is fed to an
`ssl.SSLObject` over two `ssl.MemoryBIO`s (the documented way to run TLS on a non-blocking transport), and a
plain HTTP request is read as HTTP and answered `400 Client sent an HTTP request to an HTTPS server.`, as
Go's servers answer; anything else is closed. OpenSSL does the whole protocol; this module only carries its
bytes, so every alert it writes (an unsupported version, a missing client certificate) reaches the client.
The caller bounds the handshake and every read with its timeouts, so a silent client holds no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import TypeVar

from exporter.web.config import WebConfigError, WebConfigWatcher

TLS_HANDSHAKE_RECORD = 0x16
"""The first byte of every TLS ClientHello."""
READ_BYTES = 16 * 1024
T = TypeVar("T")


class TLSRefusedError(Exception):
    """The connection did not become a TLS connection; the message says why (for the debug log)."""


def is_tls(first: bytes) -> bool:
    return first[:1] == bytes([TLS_HANDSHAKE_RECORD])


def is_plain_http(first: bytes) -> bool:
    return first[:1].isalpha()


def current_context(web_config: WebConfigWatcher) -> ssl.SSLContext:
    """The web config's SSLContext as it is now; TLSRefusedError while the file is invalid (fail closed)."""
    try:
        context = web_config.current().context
    except WebConfigError as error:
        raise TLSRefusedError(f"the web config is invalid: {error}") from None
    if context is None:  # the watcher refuses to switch TLS off in a running process; never served plain
        raise TLSRefusedError("the web config has no tls_server_config")
    return context


class TLSStream:
    """A server-side TLS session over a plain asyncio stream; reads and writes plaintext.

    `first` is what was already read from the stream (the start of the ClientHello).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        first: bytes,
    ) -> None:
        self._reader, self._writer = reader, writer
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._incoming.write(first)
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    async def handshake(self) -> None:
        """TLSRefusedError when it fails; the alert OpenSSL wrote for the client is sent first."""
        try:
            await self._call(self._tls.do_handshake)
        except (ssl.SSLError, ConnectionError) as error:
            raise TLSRefusedError(f"handshake failed: {getattr(error, 'reason', None) or error}") from None
        finally:
            self._send_pending()

    async def read(self, size: int) -> bytes:
        """Up to `size` bytes of plaintext; b"" at the end (close_notify or the connection closed)."""
        try:
            return await self._call(self._tls.read, size)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""

    def write(self, data: bytes) -> None:
        if data:
            self._tls.write(data)
            self._send_pending()

    async def drain(self) -> None:
        await self._writer.drain()

    def close(self) -> None:
        """Say close_notify (without waiting for the client's), then close the connection."""
        with contextlib.suppress(ssl.SSLError, ValueError):
            self._tls.unwrap()
        self._send_pending()
        self._writer.close()

    async def _call(self, operation: Callable[..., T], *args: int) -> T:
        """Run an SSLObject operation, feeding it the connection's bytes until it has what it needs."""
        while True:
            try:
                return operation(*args)
            except ssl.SSLWantReadError:
                self._send_pending()
                data = await self._reader.read(READ_BYTES)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()

    def _send_pending(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self._writer.write(pending)
