"""Where a Room is: the forms a user may write a target in, parsed once and validated up front.

- `ws://HOST[:PORT]`: the WebSocket API directly.
- `HOST` or `HOST:PORT`: the same, written short (port 8765 by default).
- `http://HOST[:PORT]`: the Room's web UI (port 80 by default); the WebSocket port is discovered from
  `/public/default/config.json` at every collection, because the Room may move it when 8765 is busy.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_WEBSOCKET_PORT = 8765
DEFAULT_WEB_PORT = 80


class TargetError(ValueError):
    """The target string is not one of the accepted forms."""


@dataclass(frozen=True)
class RoomTarget:
    """A parsed target. `discover` means `port` is the web UI port, not the WebSocket port."""

    host: str
    port: int
    discover: bool

    def websocket_url(self, port: int | None = None) -> str:
        return f"ws://{host_port(self.host, port or self.port)}"

    def __str__(self) -> str:
        scheme = "http" if self.discover else "ws"
        return f"{scheme}://{host_port(self.host, self.port)}"


def host_port(host: str, port: int) -> str:
    """`HOST:PORT` as a URL writes it: an IPv6 address in brackets, so its colons are not the port's."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bracketed(written: str, scheme: str | None) -> str:
    """`[ADDR]:PORT` for an unbracketed IPv6 address: `fd00::1:8765` is most likely fd00::1 and port 8765
    (the other reading follows); `::1` or `fd00::1` alone gets the default port."""
    prefix = f"{scheme}://" if scheme else ""
    default = DEFAULT_WEB_PORT if scheme == "http" else DEFAULT_WEBSOCKET_PORT
    address, _, last = written.rpartition(":")
    if last.isdigit() and 0 < int(last) < 65536 and _is_ipv6(address):
        whole = f", or {prefix}[{written}]:{default} if all of it is the address" if _is_ipv6(written) else ""
        return f"{prefix}[{address}]:{last}{whole}"
    return f"{prefix}[{written}]:{default}" if _is_ipv6(written) else f"{prefix}[ADDRESS]:PORT"


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def websocket_port_hint(target: RoomTarget) -> str:
    """For an http:// target whose port answered as a WebSocket server: it is the WebSocket port."""
    websocket = f"ws://{host_port(target.host, target.port)}"
    return (
        f"; port {target.port} is the WebSocket port, not the web UI's: write the target as {websocket} "
        f"(http:// takes the web UI's port, {DEFAULT_WEB_PORT} by default)"
    )


def parse_target(text: str) -> RoomTarget:
    """Parse a target; raises TargetError with a message that says what is wrong."""
    text = text.strip()
    if not text:
        raise TargetError("the target is empty")
    written = text if "://" in text else f"ws://{text}"
    try:
        parts = urlsplit(written)
    except ValueError:  # an unbalanced bracket: urlsplit's "Invalid IPv6 URL"
        raise TargetError(f"the target {text!r} has an unbalanced '[' or ']'; write [IPV6]:PORT") from None
    if parts.scheme not in ("ws", "http"):
        raise TargetError(f"unsupported scheme {parts.scheme!r} in {text!r}: use ws://, http:// or HOST:PORT")
    if parts.username is not None or parts.password is not None:
        raise TargetError(f"credentials do not belong in the target {text!r}: use --pin-file")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise TargetError(f"the target {text!r} has a path; the Room's API has none: use HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        host_and_port = parts.netloc
        if host_and_port.count(":") >= 2 and "[" not in host_and_port:
            raise TargetError(
                f"the target {text!r} looks like an IPv6 address: write it in brackets, "
                f"as {_bracketed(host_and_port, parts.scheme if '://' in text else None)}"
            ) from None
        raise TargetError(f"bad port in the target {text!r}") from None
    host = parts.hostname
    if not host:
        raise TargetError(f"no host in the target {text!r}")
    discover = parts.scheme == "http"
    if port is None:
        port = DEFAULT_WEB_PORT if discover else DEFAULT_WEBSOCKET_PORT
    if port == 0:
        raise TargetError(f"bad port in the target {text!r}")
    return RoomTarget(host=host, port=port, discover=discover)
