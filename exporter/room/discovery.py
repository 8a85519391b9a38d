"""Port discovery: ask the Room's web UI which port its WebSocket API listens on (reference §1).

The Room moves its WebSocket port when 8765 is busy, so a target given as `http://HOST[:WEBPORT]` is
resolved at every collection from `/public/default/config.json`. The document's `hostname` is ignored
(its meaning is undocumented): the WebSocket is reached on the target's own host, at the very address that
served config.json (the port it names is that machine's), never by looking the name up again.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Sequence

from exporter.room.connect import Address, open_tcp
from exporter.room.deadline import Deadline
from exporter.room.errors import CollectionError, Reason, describe
from exporter.room.target import RoomTarget, websocket_port_hint

CONFIG_PATH = "/public/default/config.json"
MAX_CONFIG_BYTES = 64 * 1024
"""The documented config.json is about 100 bytes; anything far larger is not one."""


def websocket_port_from_config(document: bytes) -> int:
    """The WebSocket port named by a config.json body; a protocol error for any other shape."""
    try:
        config = json.loads(document)
    except (ValueError, RecursionError):
        raise CollectionError(Reason.PROTOCOL, "config.json is not JSON") from None
    try:
        port = config["config"]["websocket"]["port"]
    except (KeyError, TypeError):
        raise CollectionError(
            Reason.PROTOCOL, "config.json is not the documented shape: it has no config.websocket.port"
        ) from None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise CollectionError(Reason.PROTOCOL, f"config.json names no valid WebSocket port: {port!r}")
    return port


def discover_websocket_port(
    target: RoomTarget, addresses: Sequence[Address], deadline: Deadline
) -> tuple[int, Address]:
    """Fetch config.json from the target's web port on one of `addresses`, within the deadline; return the
    WebSocket port it names and the address that answered."""
    connection = http.client.HTTPConnection(target.host, target.port, timeout=deadline.remaining("discovery"))
    try:
        # Every read and write of this socket waits at most what is left of the deadline (DeadlineSocket).
        connection.sock, address = open_tcp(target.host, addresses, target.port, deadline, "discovery")
        body = _get_config(connection, target, deadline)
    finally:
        connection.close()
    return websocket_port_from_config(body), address


def _get_config(connection: http.client.HTTPConnection, target: RoomTarget, deadline: Deadline) -> bytes:
    try:
        connection.request("GET", CONFIG_PATH, headers={"Accept": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            speaks_websocket = response.status == 426 or response.getheader("Sec-WebSocket-Version")
            raise CollectionError(
                Reason.CONNECT,
                f"{target}{CONFIG_PATH} answered HTTP {response.status} {response.reason}"
                + (websocket_port_hint(target) if speaks_websocket else ""),
            )
        body = response.read(MAX_CONFIG_BYTES + 1)
    except TimeoutError:
        raise CollectionError(Reason.TIMEOUT, f"config.json from {target} did not arrive in time") from None
    except (OSError, http.client.HTTPException) as error:
        raise deadline.failure(
            Reason.CONNECT,
            f"fetching config.json from {target} failed: {describe(error)}",
            f"config.json from {target} did not arrive in time",
        ) from None
    if len(body) > MAX_CONFIG_BYTES:
        raise CollectionError(
            Reason.PROTOCOL, f"config.json from {target} is larger than {MAX_CONFIG_BYTES} bytes"
        )
    return body
