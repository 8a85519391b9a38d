"""Opening a TCP connection to a Room within the collection's deadline, name resolution included.

`socket.create_connection` resolves the host name with `getaddrinfo`, which no socket timeout bounds: a slow
DNS server would hold a scrape past its deadline. The lookup runs in a small shared pool instead, and the
collection stops waiting for it when the deadline passes (the lookup itself ends when the resolver gives up).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from exporter.room.deadline import Deadline
from exporter.room.errors import CollectionError, Reason

SocketAddress = tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
"""What `getaddrinfo` gives for IPv4, for IPv6, and for IPv6 on a Python built without IPv6 support."""
AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, SocketAddress]

_resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="resolve")


def resolve(host: str, port: int, deadline: Deadline, phase: str) -> Sequence[AddressInfo]:
    """The addresses of `host`; an IP literal needs no lookup and costs no thread hop."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    lookup = _resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        return lookup.result(timeout=deadline.remaining(phase))
    except TimeoutError:
        raise CollectionError(Reason.TIMEOUT, f"resolving {host} did not finish in time") from None
    except OSError as error:
        raise CollectionError(Reason.CONNECT, f"cannot resolve {host}: {error.strerror or error}") from None


def open_tcp(host: str, port: int, deadline: Deadline, phase: str) -> socket.socket:
    """A connected socket to `host:port`, trying each address in turn, all within the deadline.

    Opened by us rather than by websocket-client or http.client, so no proxy variable can reroute it.
    """
    last_error: OSError | None = None
    for family, kind, proto, _, address in resolve(host, port, deadline, phase):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(deadline.remaining(phase))
            sock.connect(address)
        except TimeoutError:
            sock.close()
            raise CollectionError(Reason.TIMEOUT, f"TCP connect to {host}:{port} timed out") from None
        except OSError as error:
            sock.close()
            last_error = error
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    detail = (last_error.strerror or str(last_error)) if last_error else "no address"
    raise CollectionError(Reason.CONNECT, f"cannot connect to {host}:{port}: {detail}")
