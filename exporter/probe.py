"""`GET /probe?target=HOST[:PORT]&module=NAME`: collect one Room with a module's credentials.

This is the multi-target pattern. The answer carries the same metric names as the single-target `/metrics`
(`trueconf_up` per probe) and nothing about the exporter itself. A request that cannot be served gets a
one-line plain-text reason: 400 for a missing or malformed target or an unknown module, 403 for a target
outside `allowed_targets`, decided before any connection is attempted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, make_wsgi_app

from exporter.collection import Collection, collect_room
from exporter.collector import RoomCollector
from exporter.config import DEFAULT_MODULE, ExporterConfig, Module
from exporter.room import RoomTarget, TargetError

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
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


Collect = Callable[[RoomTarget, str | None, float], Collection]


def probe_app(
    environ: dict[str, Any],
    start_response: StartResponse,
    config: ExporterConfig,
    timeout_for: Callable[[float], float],
    collect: Collect = collect_room,
) -> Iterable[bytes]:
    """Answer one /probe request; `timeout_for` turns the module's timeout into this scrape's deadline."""
    try:
        module, target = resolve_probe(config, environ.get("QUERY_STRING", ""))
    except ProbeRefusedError as refused:
        start_response(refused.status, [("Content-Type", "text/plain; charset=utf-8")])
        return [f"{refused.reason}\n".encode()]
    timeout = timeout_for(module.timeout_seconds)

    def collect_once() -> Collection:
        return collect(target, module.pin, timeout)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RoomCollector(collect_once))
    return make_wsgi_app(registry)(environ, start_response)


def _echo(value: str, limit: int = MAX_ECHO_CHARS) -> str:
    """A request value quoted safely in a one-line answer."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)
