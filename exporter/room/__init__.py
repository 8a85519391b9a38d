"""Everything about talking to a TrueConf Room: targets, discovery, the WebSocket conversation, errors."""

from exporter.room.deadline import Deadline
from exporter.room.errors import CollectionError, Reason
from exporter.room.request import RoomRequest
from exporter.room.target import RoomTarget, TargetError, parse_target

__all__ = [
    "CollectionError",
    "Deadline",
    "Reason",
    "RoomRequest",
    "RoomTarget",
    "TargetError",
    "parse_target",
]
