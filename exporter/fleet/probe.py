"""What a `/probe?target=HOST[:PORT]&module=NAME` request asks for, checked against the config.

This is the multi-target pattern: a request that cannot be served is refused with a one-line reason, 400 for
a missing or malformed target or an unknown module, 403 for a target outside `allowed_targets`, decided
before any connection is attempted. The HTTP answer itself is web.app's.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from exporter.fleet.config import DEFAULT_MODULE, ExporterConfig, Module
from exporter.room import RoomTarget, TargetError

log = logging.getLogger(__name__)

MAX_ECHO_CHARS = 100
"""A request value quoted back in an error is cut to this length."""


class ProbeRefusedError(Exception):
    """A probe request that is answered with an HTTP error instead of metrics."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def resolve_probe(config: ExporterConfig, query_string: str) -> tuple[Module, RoomTarget]:
    """The module and target a probe asks for; ProbeRefusedError when the request is bad or not allowed."""
    query = parse_qs(query_string, keep_blank_values=True)
    targets = query.get("target", [])
    if not targets or not targets[0].strip():
        raise ProbeRefusedError(
            "400 Bad Request", "missing parameter 'target': use /probe?target=HOST[:PORT]&module=NAME"
        )
    if len(targets) > 1:
        raise ProbeRefusedError("400 Bad Request", "give 'target' once")
    modules = query.get("module", [])
    if len(modules) > 1:
        raise ProbeRefusedError("400 Bad Request", "give 'module' once")
    module_name = modules[0] if modules and modules[0] else DEFAULT_MODULE
    module = config.modules.get(module_name)
    if module is None:
        known = ", ".join(sorted(config.modules))
        given = (
            "no module given and there is no module 'default'"
            if not modules or not modules[0]
            else (f"unknown module {_echo(module_name)}")
        )
        raise ProbeRefusedError("400 Bad Request", f"{given}; the config has: {known}")
    text = targets[0]
    if not text.isprintable():
        raise ProbeRefusedError("400 Bad Request", "the target contains control characters")
    try:
        target = module.parse_target(text)
    except TargetError as error:
        raise ProbeRefusedError(
            "400 Bad Request", f"bad target: {_echo(str(error), MAX_ECHO_CHARS * 2)}"
        ) from None
    if not config.allows(target):
        log.info(
            "probe refused: target not in allowed_targets",
            extra={"target": str(target), "detail": f"module {module.name}"},
        )
        raise ProbeRefusedError("403 Forbidden", f"target {_echo(str(target))} is not in allowed_targets")
    return module, target


def _echo(value: str, limit: int = MAX_ECHO_CHARS) -> str:
    """A request value quoted safely in a one-line answer."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)
