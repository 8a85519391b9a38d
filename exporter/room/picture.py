"""The Room's whole file-transfer picture from the replies of one scrape, free of I/O.

One scrape sends several requests together (reference §5): `getOutgoingFilesRequests` always, and some of
`getIncomingFilesRequests`, `getFileTransferAvailability`, `getAppState` and `getSystemInfo`. Only the
outgoing reply decides whether the Room is up: the client has already made a missing or refused one the
Room's failure, and a malformed list raises here. An optional method that the Room refuses, does not know,
answers in a shape this exporter cannot read, or does not answer in time costs only its own families (and
shows as `trueconf_scrape_method_success{method} 0`); it never makes the Room look down (reference §7).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from exporter.methods import (
    APP_STATE_METHOD,
    AVAILABILITY_METHOD,
    INCOMING_METHOD,
    OUTGOING_METHOD,
    SYSTEM_INFO_METHOD,
)
from exporter.room import protocol
from exporter.room.file_requests import ReplyShapeError, Snapshot, parse_incoming_reply, parse_outgoing_reply
from exporter.text import visible

log = logging.getLogger(__name__)

UNKNOWN = "unknown"

AVAILABILITY_STATES: tuple[str, ...] = (
    "forbidden_by_server",
    "forbidden_by_license",
    "server_login_required",
    "available",
    UNKNOWN,
)
"""Every value of `trueconf_file_transfer_availability`'s `state` label: codes 0..3, then `unknown`."""

APP_STATES: tuple[str, ...] = (
    "no_server",
    "connecting",
    "login_required",
    "ready",
    "calling",
    "in_conference",
    "ending_conference",
    UNKNOWN,
)
"""Every value of `trueconf_room_app_state`'s `state` label: `appState` 0..6 in order, then `unknown`."""

VERSION_PARTS: tuple[str, ...] = ("major", "minor", "revision", "build")
"""The keys of `productInfo` that make the version, in the order they are joined."""

MAX_VERSION_PART_DIGITS = 9
"""A version part longer than this is no real version: the label would be unbounded, so it is refused."""

MAX_NAME_CHARS = 64
"""The Room's name and TrueConf ID are label values of `trueconf_room_identity_info`: cut to this many
characters (a name is the Room's own text, of any length)."""


class ShapeError(ValueError):
    """A successful optional reply that does not hold what the reference says it holds."""


@dataclass(frozen=True)
class RoomIdentity:
    """Who the Room is logged in as (getSystemInfo `authInfo`), each part ready to be a label value: control
    and bidi characters escaped visibly (exporter/text.py), cut to MAX_NAME_CHARS characters.

    `name` is the display name `peerDn`, or the TrueConf ID when the Room gives no display name; `peer_id`
    is `peerId`, empty when the Room gives none."""

    name: str
    peer_id: str


@dataclass(frozen=True)
class SystemInfo:
    """What a successful getSystemInfo reply says: the version always, the identity only while logged in."""

    version: str
    identity: RoomIdentity | None


@dataclass(frozen=True)
class RoomPicture:
    """What one scrape learnt from a Room that answered `getOutgoingFilesRequests`.

    Every optional part is None when its method was not asked this scrape, failed, or was unreadable.
    `version` and `identity` may also come from earlier in the session (`parse_room`'s `known_version` and
    `known_identity`), since getSystemInfo is asked once per session. `method_success` has one entry per
    method asked this scrape, in asking order.
    `collected_at` is the exporter's clock (Unix seconds) that ages are computed against.
    """

    outgoing: Snapshot
    collected_at: float
    incoming: Snapshot | None = None
    availability: str | None = None
    app_state: str | None = None
    version: str | None = None
    identity: RoomIdentity | None = None
    method_success: Mapping[str, bool] = field(default_factory=dict)


def parse_room(
    replies: Mapping[str, dict[str, Any]],
    asked: Sequence[str],
    now: float,
    known_version: str | None = None,
    known_identity: RoomIdentity | None = None,
) -> RoomPicture:
    """The picture of one scrape.

    `asked` lists the methods sent this scrape, getOutgoingFilesRequests among them (first, by convention);
    `replies` maps each method that got a reply to that reply, successful or not (a method with no reply in
    time is simply missing). `now` is the exporter's clock at collection (Unix seconds), kept as
    `collected_at` for the ages. `known_version` is a version learnt earlier in the session: it stands when
    getSystemInfo was not asked (or failed) this scrape; `known_identity` likewise, and also when this
    scrape's reply carries no `authInfo` (the Room is not logged in now).

    The outgoing reply is one the client accepted (room/client.py: present and successful, or the Room is
    down before any parsing); ReplyShapeError when its list is not a list. A null or missing list is zero
    requests.
    """
    if OUTGOING_METHOD not in asked:
        raise ValueError(f"{OUTGOING_METHOD} must be asked in every scrape")
    outgoing = parse_outgoing_reply(replies[OUTGOING_METHOD])
    success: dict[str, bool] = {}
    parts: dict[str, Any] = {}
    for method in asked:
        if method == OUTGOING_METHOD:
            success[method] = True
            continue
        reply = replies.get(method)
        value = _optional_part(method, reply)
        success[method] = value is not None
        if value is not None:
            parts[method] = value
    system_info: SystemInfo | None = parts.get(SYSTEM_INFO_METHOD)
    return RoomPicture(
        outgoing=outgoing,
        collected_at=now,
        incoming=parts.get(INCOMING_METHOD),
        availability=parts.get(AVAILABILITY_METHOD),
        app_state=parts.get(APP_STATE_METHOD),
        version=known_version if system_info is None else system_info.version,
        identity=known_identity if system_info is None or not system_info.identity else system_info.identity,
        method_success=success,
    )


def _optional_part(method: str, reply: dict[str, Any] | None) -> object:
    """What an optional method's reply says, or None (logged at debug) when it failed or is unreadable."""
    if reply is None:
        log.debug("no reply to an optional method this scrape", extra={"detail": method})
        return None
    failure = protocol.failure_text(reply) if isinstance(reply, dict) else "the reply is not an object"
    if failure is not None:
        log.debug("the Room refused an optional method", extra={"detail": f"{method}: {failure}"})
        return None
    parse = _PARSERS.get(method)
    if parse is None:
        return True  # a method this exporter has no families for: only its success is reported
    try:
        return parse(reply)
    except (ShapeError, ReplyShapeError) as error:
        log.debug("an optional reply this exporter cannot read", extra={"detail": f"{method}: {error}"})
        return None


def parse_availability(reply: dict[str, Any]) -> str:
    """The `state` of a successful getFileTransferAvailability reply: `availability` 0..3, or the older
    client's key `available` (reference §5), `unknown` for any other value. Raises ShapeError when neither
    key holds a value."""
    value = reply.get("availability")
    if value is None:
        value = reply.get("available")
    if value is None:
        raise ShapeError("neither 'availability' nor 'available' holds a value")
    if value is True:  # a boolean `available`: a yes says available; a no does not say why
        return "available"
    return _state(value, AVAILABILITY_STATES)


def parse_app_state(reply: dict[str, Any]) -> str:
    """The `state` of a successful getAppState reply: `appState` 0..6, `unknown` for any other value.
    Raises ShapeError when `appState` holds no value."""
    value = reply.get("appState")
    if value is None:
        raise ShapeError("'appState' holds no value")
    return _state(value, APP_STATES)


def parse_version(reply: dict[str, Any]) -> str:
    """`major.minor.revision.build` from a successful getSystemInfo reply's `productInfo`.

    Each part must be a non-negative whole number (or a string of at most nine digits); anything else raises
    ShapeError, since a label value made of whatever the Room sent would be unbounded.
    """
    info = reply.get("productInfo")
    if not isinstance(info, dict):
        raise ShapeError("'productInfo' is not an object")
    parts = []
    for key in VERSION_PARTS:
        value = info.get(key)
        if isinstance(value, bool):
            raise ShapeError(f"productInfo {key!r} is a boolean")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and 0 <= value < 10**MAX_VERSION_PART_DIGITS:
            parts.append(str(value))
        elif isinstance(value, str) and value.isascii() and value.isdigit():
            if len(value) > MAX_VERSION_PART_DIGITS:
                raise ShapeError(f"productInfo {key!r} is too long")
            parts.append(str(int(value)))
        else:
            raise ShapeError(f"productInfo {key!r} is not a whole number")
    return ".".join(parts)


def parse_system_info(reply: dict[str, Any]) -> SystemInfo:
    """The version (parse_version: raises ShapeError when unreadable) and the identity (parse_identity) of a
    successful getSystemInfo reply."""
    return SystemInfo(parse_version(reply), parse_identity(reply))


def parse_identity(reply: dict[str, Any]) -> RoomIdentity | None:
    """Who the Room is logged in as, from `authInfo {peerId, peerDn}`; None when it holds neither.

    `authInfo` is sent only while the Room is logged in to its server, so its absence is no defect, and an
    unreadable one (not an object, a number for a name) costs only the identity, never the version. A part
    that is not a string, or is empty or only spaces, is not known; a name is never invented but from the
    TrueConf ID. Both are made safe and short as label values (RoomIdentity)."""
    auth = reply.get("authInfo")
    if not isinstance(auth, dict):
        return None
    name, peer_id = _label_text(auth.get("peerDn")), _label_text(auth.get("peerId"))
    if not name and not peer_id:
        return None
    return RoomIdentity(name or peer_id, peer_id)


def _label_text(value: Any) -> str:
    """A Room's string as a bounded, safe label value; empty for anything but a string with a character
    other than a space. Only the first characters are looked at, whatever the string's length."""
    if not isinstance(value, str):
        return ""
    return visible(value[: MAX_NAME_CHARS * 2].strip())[:MAX_NAME_CHARS].strip()


def identity_of(system_info: dict[str, Any] | None) -> RoomIdentity | None:
    """The identity in a getSystemInfo reply kept from earlier in the session, for `parse_room`'s
    `known_identity`; None when there is none or the reply failed."""
    if system_info is None or protocol.failure_text(system_info) is not None:
        return None
    return parse_identity(system_info)


def version_of(system_info: dict[str, Any] | None) -> str | None:
    """The version in a getSystemInfo reply kept from earlier in the session, for `parse_room`'s
    `known_version`; None when there is none or it is failed or unreadable."""
    if system_info is None or protocol.failure_text(system_info) is not None:
        return None
    try:
        return parse_version(system_info)
    except ShapeError:
        return None


def _state(value: Any, states: tuple[str, ...]) -> str:
    """states[value] for a whole number in range, `unknown` (the last state) for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return UNKNOWN
    if isinstance(value, float) and not value.is_integer():
        return UNKNOWN
    code = int(value)
    return states[code] if 0 <= code < len(states) - 1 else UNKNOWN


_PARSERS: Mapping[str, Callable[[dict[str, Any]], object]] = MappingProxyType(
    {
        INCOMING_METHOD: parse_incoming_reply,
        AVAILABILITY_METHOD: parse_availability,
        APP_STATE_METHOD: parse_app_state,
        SYSTEM_INFO_METHOD: parse_system_info,
    }
)
