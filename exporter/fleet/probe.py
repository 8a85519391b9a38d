"""What a `/probe?target=HOST[:PORT]&module=NAME` request asks for, checked against the config.

This is the multi-target pattern: a request that cannot be served is refused with a one-line reason, 400 for
a missing or malformed target or an unknown module, 403 for a target outside `allowed_targets` (the
top-level list, or the module's own: a probe must be inside both), decided before any connection is
attempted, so a module's PIN never goes to a Room outside its own list. The HTTP answer itself is web.app's.

A name target that no name pattern allows, when the list has IP entries, is looked up here, once, within the
probe's deadline (one lookup for both lists): allowed only if every address it has matches an IP entry of
each list that did not allow the name itself, and then handed on as a
CheckedTarget, whose collection connects to exactly those addresses. A lookup that fails or times out is
not a 403 but the collection's failure (`trueconf_up 0`, reason connect or timeout), with no connection
made: the same answer as for a name allowed by a name pattern that does not resolve. The 403 never says
which addresses a name has, so /probe cannot be used to read the exporter's DNS view; the log does.

Any caller can make /probe look up any name this way, slow ones included, so these lookups have places of
their own (the app's `check_lookups` resolver, handed to `resolve_probe`): filling them never holds up the
lookups of the collections themselves, which go through the session pool's resolver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import parse_qs

from exporter.fleet.config import DEFAULT_MODULE, AllowList, ExporterConfig, Module
from exporter.room import Deadline, RoomTarget, TargetError
from exporter.room.connect import CheckedTarget, Lookup, Resolver
from exporter.room.errors import CollectionError
from exporter.text import ECHO_CHARS, echo

log = logging.getLogger(__name__)

TARGET_ERROR_CHARS = 2 * ECHO_CHARS
"""The target parser's message is quoted up to this length, not a value's: it is a sentence of up to about
100 characters of its own that quotes the target as given (an unbracketed IPv6 one again in its advice)."""
MAX_CHECK_LOOKUPS_IN_FLIGHT = 32
"""Names looked up at once to check them against the IP entries (a thread each), apart from collections'."""


class ProbeRefusedError(Exception):
    """A probe request that is answered with an HTTP error instead of metrics."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


DEBUG_VALUES = MappingProxyType({"true": True, "1": True, "false": False, "0": False, "": False})


Query = dict[str, list[str]]
"""A request's query, parsed once (`parse_query`) for every question asked of it."""


def parse_query(query_string: str) -> Query:
    return parse_qs(query_string, keep_blank_values=True)


def wants_debug(query: Query) -> bool:
    """`debug=true` asks for the probe's trace as text instead of its metrics (as blackbox_exporter's)."""
    values = query.get("debug", [])
    if len(values) > 1:
        raise ProbeRefusedError("400 Bad Request", "give 'debug' once")
    if values and values[0].lower() not in DEBUG_VALUES:
        raise ProbeRefusedError("400 Bad Request", "'debug' takes true or false")
    return bool(values) and DEBUG_VALUES[values[0].lower()]


def resolve_probe(
    config: ExporterConfig,
    query: Query,
    check_lookups: Resolver,
    deadline_seconds: Callable[[Module], float] | None = None,
) -> tuple[Module, RoomTarget]:
    """The module and target a probe asks for; ProbeRefusedError when the request is bad or not allowed.

    A name that only IP entries could allow is looked up by `check_lookups` (made with
    `MAX_CHECK_LOOKUPS_IN_FLIGHT` places, apart from the collections' resolver).

    `deadline_seconds` gives the probe's deadline for its module (the scrape-timeout header applied); when
    left out, the module's timeout. It bounds the one name lookup a CheckedTarget needs, and the collection
    that follows counts its own deadline from the start of that lookup.
    """
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
            else (f"unknown module {echo(module_name)}")
        )
        raise ProbeRefusedError("400 Bad Request", f"{given}; the config has: {known}")
    text = targets[0]
    if not text.isprintable():
        raise ProbeRefusedError("400 Bad Request", "the target contains control characters")
    try:
        target = module.parse_target(text)
    except TargetError as error:
        raise ProbeRefusedError(
            "400 Bad Request", f"bad target: {echo(str(error), TARGET_ERROR_CHARS)}"
        ) from None
    refusing = [scope for scope in _scopes(config, module) if not scope.allow_list.allows(target)]
    if not refusing:
        return module, target
    for scope in refusing:
        if not scope.allow_list.checks_addresses(target):
            log.info(
                f"probe refused: target not in {scope.log_words}",
                extra={"target": str(target), "detail": f"module {module.name}"},
            )
            raise ProbeRefusedError("403 Forbidden", f"target {echo(str(target))} is not in {scope.words}")
    seconds = deadline_seconds(module) if deadline_seconds else module.timeout_seconds
    return module, _checked(refusing, module, target, Deadline(seconds), check_lookups)


@dataclass(frozen=True)
class _Scope:
    """One list a probe must be inside, with how a refusal names it."""

    allow_list: AllowList
    words: str
    """For the 403: `allowed_targets`, or `the allowed_targets of module 'NAME'`."""
    log_words: str


def _scopes(config: ExporterConfig, module: Module) -> list[_Scope]:
    """The top-level list (the fleet), then the module's own (where its PIN may go): each that exists."""
    scopes = []
    if config.allow_list is not None:
        scopes.append(_Scope(config.allow_list, "allowed_targets", "allowed_targets"))
    if module.allow_list is not None:
        words = f"the allowed_targets of module {module.name!r}"
        scopes.append(_Scope(module.allow_list, words, "the module's allowed_targets"))
    return scopes


def _checked(
    scopes: list[_Scope], module: Module, target: RoomTarget, deadline: Deadline, check_lookups: Resolver
) -> CheckedTarget:
    """The name target with the addresses it was looked up to have (once), if every one matches an IP entry
    of each list in `scopes` (those that did not allow the name itself)."""
    try:
        addresses = check_lookups.resolve(target.host, deadline, "lookup")
    except CollectionError as error:
        lookup = Lookup((), deadline.started, error)
    else:
        for scope in scopes:
            if not scope.allow_list.allows_addresses((address.ip for address in addresses), target.port):
                log.info(
                    f"probe refused: target resolves to addresses outside {scope.log_words}",
                    extra={
                        "target": str(target),
                        "detail": f"module {module.name}; {target.host} is {', '.join(map(str, addresses))}",
                    },
                )
                raise ProbeRefusedError(
                    "403 Forbidden",
                    f"target {echo(str(target))} is not in {scope.words}, and neither are all its addresses",
                )
        lookup = Lookup(addresses, deadline.started)
    return CheckedTarget(target.host, target.port, target.discover, lookup)
