"""Ways the emulated Room can misbehave, so every failure path of the exporter can be produced for real."""

from __future__ import annotations

from enum import StrEnum

NOTIFICATION_REPEATS = 3
"""How often `repeated-notifications` sends each notification."""
STORM_BURST = 500
"""Notifications a `notification-storm` writes before it lets the Room answer requests again."""


class Fault(StrEnum):
    """One misbehaviour of the emulated Room, selected per emulator with `--fault`."""

    NONE = "none"
    HTTP_INSTEAD_OF_WEBSOCKET = "http-instead-of-websocket"
    """The WebSocket port answers the upgrade with a plain HTTP 200 page."""
    SILENT = "silent"
    """Completes the WebSocket handshake, then never says anything."""
    NO_AUTH_REPLY = "no-auth-reply"
    """Reads `auth` and never answers it."""
    SLOW_REPLY = "slow-reply"
    """Answers the request only after `slow_reply_seconds`."""
    OLD_ROOM = "old-room"
    """A Room older than 4.1: the file-transfer methods (`getOutgoingFilesRequests`,
    `getIncomingFilesRequests`, `getFileTransferAvailability`) are unknown methods; `getAppState` answers and
    `getSystemInfo` gives a 4.0 version (which methods a 4.0 Room knows is the project's reading)."""
    NOT_JSON = "not-json"
    NOT_OBJECT = "not-object"
    BINARY_FRAME = "binary-frame"
    DEEP_JSON = "deep-json"
    """A reply nested a hundred thousand levels deep."""
    MISSING_LIST = "missing-list"
    """`result: true` but no `outgoingFilesRequests` key."""
    CLOSE_MID_REPLY = "close-mid-reply"
    """Sends the first fragment of the reply, then drops the TCP connection."""
    CLOSE_BEFORE_REPLY = "close-before-reply"
    """Answers the request with a WebSocket close frame."""
    BAD_CONFIG_JSON = "bad-config-json"
    """config.json on the web port is not the documented shape."""
    NO_HANDSHAKE = "no-handshake"
    """Accepts the TCP connection, reads the upgrade request and never answers it (websockets gives up after
    its 10 s open timeout; the exporter's deadline is shorter)."""
    HUGE_REPLY = "huge-reply"
    """The reply is one text frame of `huge_reply_bytes` (64 MiB by default), far larger than any real one."""
    HUGE_FRAGMENTED_REPLY = "huge-fragmented-reply"
    """The same huge reply sent as many 256 KiB fragments, each small on its own."""
    NOTIFICATION_FLOOD = "notification-flood"
    """Ten thousand notifications precede the (correct) reply, as a busy Room during large transfers."""
    ENDLESS_NOTIFICATIONS = "endless-notifications"
    """Notifications, one after another, for ever; the reply never comes."""
    OPTIONAL_UNKNOWN = "optional-unknown"
    """A Room older than the optional methods: `getIncomingFilesRequests`, `getFileTransferAvailability`,
    `getAppState` and `getSystemInfo` get the unknown-method reply (`result: false`); outgoing works."""
    OPTIONAL_SILENT = "optional-silent"
    """The optional methods are read and never answered; `getOutgoingFilesRequests` is answered at once."""
    STALLED_REPLY = "stalled-reply"
    """The `getOutgoingFilesRequests` reply is held back for `slow_reply_seconds` while the optional methods
    asked with it (or after it) are answered at once: the replies come out of request order."""
    RESTART = "restart"
    """The Room restarts every `restart_seconds` (60 s by default): every open connection is dropped without
    a close frame, as when the Room's process goes away; new connections are accepted at once. Tests call
    `RunningEmulator.restart()` instead, at the moment they choose."""
    HALF_OPEN = "half-open"
    """Each connection answers one scrape: from its second `getOutgoingFilesRequests` on, requests are read
    and never answered, nothing is sent and the connection is never closed, as a half-open TCP connection.
    A new connection works again. (`RunningEmulator.sever()` does the same to every open connection now.)"""
    REORDERED_REPLIES = "reordered-replies"
    """Requests that arrive together (within `REORDER_WINDOW_SECONDS`) are answered in reverse order."""
    FILE_TRANSFER_FORBIDDEN = "file-transfer-forbidden"
    """`getFileTransferAvailability` answers 0 (forbidden by the server); everything else as the scenario."""
    NO_NOTIFICATIONS = "no-notifications"
    """The Room sends no notification at all: no transition is announced and nothing comes before a reply, as
    an older Room that sends none (or other event names) to a client that counts transfers."""
    REPEATED_NOTIFICATIONS = "repeated-notifications"
    """Every notification is sent three times in a row (`NOTIFICATION_REPEATS`), the ones before a reply
    included: a client must count each transition once however often it is told."""
    FLEETING_REQUESTS = "fleeting-requests"
    """A finished request (processed or failed) leaves the lists at once: `getOutgoingFilesRequests` and
    `getIncomingFilesRequests` list only waiting and downloading requests, so no scrape ever sees a request
    finished; only the notifications tell."""
    NOTIFICATION_STORM = "notification-storm"
    """Right after the `auth` reply, and again after each `getOutgoingFilesRequests` reply once the last storm
    is over, every authorised connection gets `storm_notifications` (50 000 by default) progress
    notifications in bursts without pause, as fast as the connection takes them (the Room waits only for its
    write buffer to drain), while requests are still answered between the bursts."""
