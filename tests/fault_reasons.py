"""Every fault mode of the emulated Room and the reason the exporter must report for it: one table for the
client-level tests (test_client.py) and the whole-exporter fault suite (test_faults.py)."""

from exporter.emulator.faults import Fault
from exporter.room import Reason

FAULTS: list[tuple[Fault, Reason]] = [
    (Fault.NO_HANDSHAKE, Reason.TIMEOUT),
    (Fault.HTTP_INSTEAD_OF_WEBSOCKET, Reason.CONNECT),
    (Fault.SILENT, Reason.TIMEOUT),
    (Fault.NO_AUTH_REPLY, Reason.TIMEOUT),
    (Fault.SLOW_REPLY, Reason.TIMEOUT),
    (Fault.ENDLESS_NOTIFICATIONS, Reason.TIMEOUT),
    (Fault.OLD_ROOM, Reason.API),
    (Fault.NOT_JSON, Reason.PROTOCOL),
    (Fault.NOT_OBJECT, Reason.PROTOCOL),
    (Fault.BINARY_FRAME, Reason.PROTOCOL),
    (Fault.DEEP_JSON, Reason.PROTOCOL),
    (Fault.CLOSE_MID_REPLY, Reason.PROTOCOL),
    (Fault.CLOSE_BEFORE_REPLY, Reason.PROTOCOL),
    (Fault.HUGE_REPLY, Reason.PROTOCOL),
    (Fault.HUGE_FRAGMENTED_REPLY, Reason.PROTOCOL),
]

TOLERATED: list[Fault] = [Fault.MISSING_LIST]
"""Fault modes that are not faults of the exporter's making: a real Room may do this (reference §7), so the
scrape is `trueconf_up 1`. A `result: true` reply without its list is zero requests, not reason `protocol`."""

SLOW_OR_HUGE = {Fault.HUGE_REPLY, Fault.HUGE_FRAGMENTED_REPLY}
"""Faults whose test needs tens of MiB on the wire: exercised by the fault suite only."""
