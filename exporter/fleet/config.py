"""`--config.file`: named modules (how to read a Room) and the allow-list of targets `/probe` may reach.

    modules:
      default:
        pin_file: /run/secrets/room_pin   # or pin_env: ROOM_PIN (also reads ROOM_PIN_FILE), or pin: (warned)
        timeout: 5s                       # a duration: 5, 5s, 2.5s, 500ms or 1m; --timeout when left out
        discovery: false                  # true: a bare HOST[:PORT] is the Room's web UI; ask it for the port
        allowed_targets:                  # where this module's PIN may go: the same syntax as below
          - "room-*.example.org"
      boardrooms:
        pin_env: BOARDROOM_PIN
        allowed_targets: ["10.0.0.5:8765"]
      open-rooms: {}                      # no PIN: unsecured auth
    allowed_targets:                      # optional; see "The allow-list" below
      - "room-*.example.org"              # a name pattern: '*' stays within one label
      - "10.20.30.0/24"                   # a CIDR; also 10.20.30.* and single addresses
      - "10.0.0.5:8765"                   # any entry may name a port

Loading is all or nothing: any mistake raises ConfigError naming the file, the key and the problem, and the
message never contains a PIN (not even a YAML error's snippet of the offending line).

Scoping PINs. A module's own `allowed_targets` narrows the top-level list for the probes naming it: a probe
is allowed only when the target is in both (in the module's alone when there is no top-level list). When
modules read PINs from more than one place (`pin_file` PATH, `pin_env` VARIABLE, or a module's own `pin`),
every module with a PIN must have a list of its own, or the file is refused: otherwise anyone who can call
/probe could send one module's PIN to a Room meant for another. Modules reading the same place share one
PIN, so a config with one PIN (one module or several) needs no module list. Two modules with different PINs
whose lists visibly overlap (the same name pattern, a name the other's pattern matches, or overlapping IP
networks, with compatible ports) are warned about at every load, without failing it.

The allow-list. Each entry is one of two kinds, optionally followed by `:PORT` (an IPv6 one as `[ADDR]:PORT`);
an entry without a port allows every port, one with a port only that port (for a discovery target, the web
UI's port as written in the target).
- An IP entry (an address `10.0.0.5` or `fd00::5`, an IPv4 pattern whose `*`s stand for whole trailing
  octets `10.20.*.*`, or a CIDR `10.20.30.0/24`, `fd00::/64`) matches IP-literal targets only, compared as
  addresses (ipaddress), never as text; an IPv4-mapped IPv6 target counts as its IPv4 address.
- A name pattern matches host names only, case-insensitively; its `*` matches letters, digits, `-` and `_`
  within one label, never a dot. A leading `**.` stands for one or more whole labels: `**.example.org`
  matches `a.example.org` and `a.b.example.org`, not `example.org`. A host that is an IP address in any
  notation (`127.1` included) is not a name.
A name target that no name pattern allows is still allowed when the list has IP entries and every address
the name has matches one of them: /probe looks it up once, inside the probe's deadline, and the collection
then connects to exactly those addresses (exporter.room.connect.CheckedTarget).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from exporter.files.pinfile import PinFileError, PinFiles
from exporter.files.yamlfile import YamlFileError, file_named_in, read_yaml, reject_unknown_keys
from exporter.methods import COLLECTORS
from exporter.room import RoomTarget, parse_target
from exporter.room.connect import IPAddress, ip_literal
from exporter.text import echo

log = logging.getLogger(__name__)

DEFAULT_MODULE = "default"
TOP_LEVEL_KEYS = ("modules", "allowed_targets")
MODULE_KEYS = (
    "pin_file",
    "pin_env",
    "pin",
    "timeout",
    "discovery",
    "sessions",
    "collectors",
    "allowed_targets",
)
PIN_KEYS = ("pin_file", "pin_env", "pin")
MIN_TIMEOUT_SECONDS = 0.05
MAX_TIMEOUT_SECONDS = 600.0
"""The range of a collection timeout, in a module and in --timeout alike."""
MODULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
DURATION_UNITS = MappingProxyType({"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0})
DURATION_FORMS = "5, 2.5s, 500ms or 1m"
"""How a duration is written, in the config file and in every duration flag and its variable alike."""


def parse_duration(value: Any, low: float, high: float | None = None) -> float:
    """Seconds from a number (seconds) or a text such as `5`, `2.5s`, `500ms`, `1m`, `1h`, checked against
    [low, high]. One parser for the config file's `timeout` and every duration flag, so both take the same
    forms and give the same message. ValueError with a short message that quotes the value (never a PIN:
    only durations come here)."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := DURATION.match(value)):
        seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    if seconds is None or not math.isfinite(seconds):
        raise ValueError(f"must be seconds ({DURATION_FORMS}), found {value!r}")
    if seconds < low or (high is not None and seconds > high):
        bounds = f"between {low:g}s and {high:g}s" if high is not None else f"at least {low:g}s"
        raise ValueError(f"must be {bounds}, found {seconds:g}s")
    return seconds


class ConfigError(YamlFileError):
    """The config file cannot be used. `str()` is one line: `FILE: KEY: PROBLEM`."""


@dataclass(frozen=True)
class Module:
    """How to read a Room: its credentials, deadline and how a bare target is understood."""

    name: str
    pin: str | None = field(repr=False)  # never printed, not even by a debugger's repr
    timeout_seconds: float
    discovery: bool = False
    pin_source: str = "none"
    """Where the PIN came from (`pin_file`, `pin_env`, `pin` or `none`): shown instead of the PIN."""
    sessions: bool | None = None
    """Keep a session open between scrapes; None: as `serve` was told (--room.sessions)."""
    collectors: tuple[tuple[str, bool], ...] = ()
    """Optional methods switched on or off here, by collector name; the others as `serve` was told."""
    allow_list: AllowList | None = None
    """The module's own `allowed_targets`: its probes must match it as well as the top-level list."""
    pin_origin: str = ""
    """Where the PIN is read (`pin_file PATH`, `pin_env VARIABLE`, or `pin in modules.NAME`); '' without a
    PIN. Modules of one origin share one PIN. Never the PIN itself."""

    def parse_target(self, text: str) -> RoomTarget:
        """A target as written in a probe: a bare HOST[:PORT] means the web UI when discovery is on."""
        text = text.strip()
        if self.discovery and text and "://" not in text:
            text = f"http://{text}"
        return parse_target(text)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
NAME_CHARS = "[a-z0-9_-]"
"""What a name pattern's `*` matches: the characters of one label, never a dot."""


class AllowEntryError(ValueError):
    """An allow-list entry that cannot be used; `str()` is the problem, to follow the entry in a message."""


@dataclass(frozen=True)
class AddressRule:
    """An IP entry: an address, an IPv4 pattern or a CIDR, with or without a port."""

    entry: str
    network: Network
    port: int | None = None

    def matches(self, address: IPAddress, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.version == self.network.version and address in self.network


@dataclass(frozen=True)
class NameRule:
    """A name pattern, with or without a port; `pattern` is anchored and lower-case."""

    entry: str
    pattern: re.Pattern[str]
    port: int | None = None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        return is_host_name(host) and self.pattern.fullmatch(host.lower()) is not None


AllowRule = AddressRule | NameRule


def is_host_name(host: str) -> bool:
    """True for a name; False for an IP address in any notation, `127.1` and `0x7f.1` included (the resolver
    reads those as addresses without asking anyone, so they must never pass as names)."""
    if ip_literal(host) is not None:
        return False
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return True
    return False


@dataclass(frozen=True)
class AllowList:
    """One `allowed_targets` list, parsed: the top-level one (the fleet) or a module's own (where its PIN
    may go). The entries as written (trimmed, lower-case) and their rules, in the same order."""

    entries: tuple[str, ...]
    rules: tuple[AllowRule, ...]

    def allows(self, target: RoomTarget) -> bool:
        """True when an entry of the target's own kind matches it as written: an IP entry an IP-literal
        target, a name pattern a name. Looks nothing up."""
        address = ip_literal(target.host)
        if address is not None:
            return self.allows_addresses((address,), target.port)
        return any(isinstance(r, NameRule) and r.matches(target.host, target.port) for r in self.rules)

    def checks_addresses(self, target: RoomTarget) -> bool:
        """True when a name target that no name pattern allows may still be allowed by its addresses: the
        list has IP entries and the target is not an IP literal."""
        return ip_literal(target.host) is None and any(isinstance(rule, AddressRule) for rule in self.rules)

    def allows_addresses(self, addresses: Iterable[IPAddress], port: int) -> bool:
        """True when there is at least one address and every one matches an IP entry for `port`."""
        rules = [rule for rule in self.rules if isinstance(rule, AddressRule)]
        addresses = list(addresses)
        return bool(addresses) and all(any(r.matches(a, port) for r in rules) for a in addresses)


@dataclass(frozen=True)
class ExporterConfig:
    """A validated config file."""

    path: str
    modules: dict[str, Module]
    allowed_targets: tuple[str, ...] | None = None
    """None: no allow-list (every target may be probed); otherwise the entries as written (trimmed)."""
    rules: tuple[AllowRule, ...] = ()
    """The entries of `allowed_targets`, parsed, in the same order."""

    @property
    def allow_list(self) -> AllowList | None:
        """The top-level list; None when there is none."""
        if self.allowed_targets is None:
            return None
        return AllowList(self.allowed_targets, self.rules)

    def allows(self, target: RoomTarget) -> bool:
        """True when there is no allow-list, or when it allows the target as written (AllowList.allows)."""
        allow_list = self.allow_list
        return allow_list is None or allow_list.allows(target)

    def checks_addresses(self, target: RoomTarget) -> bool:
        """True when the top-level list could still allow a name target by its addresses."""
        allow_list = self.allow_list
        return allow_list is not None and allow_list.checks_addresses(target)

    def allows_addresses(self, addresses: Iterable[IPAddress], port: int) -> bool:
        """True when there is at least one address and every one matches a top-level IP entry for `port`."""
        return AllowList(self.allowed_targets or (), self.rules).allows_addresses(addresses, port)

    def unscoped_pin_modules(self) -> list[str]:
        """The modules whose PIN /probe would send to any host it is given: no list of their own, and no
        top-level list either."""
        if self.allowed_targets is not None:
            return []
        return [m.name for m in self.modules.values() if m.pin is not None and m.allow_list is None]


def load_config(
    path: Path | str, default_timeout: float, pin_files: PinFiles | None = None
) -> ExporterConfig:
    """Read and validate the config file; ConfigError on the first mistake found. PIN files are read by
    `pin_files` (the process's, so a reload warns of nothing already warned of); by new ones if not given."""
    path = Path(path)
    document = read_yaml(path, ConfigError)
    return parse_config(document, path, default_timeout, pin_files)


def parse_config(
    document: Any, path: Path | str, default_timeout: float, pin_files: PinFiles | None = None
) -> ExporterConfig:
    """Validate a parsed document; `path` names the file in messages and anchors relative pin_files."""
    pin_files = pin_files or PinFiles()
    if document is None:
        raise ConfigError(path, None, "the file is empty; it needs at least 'modules'")
    if not isinstance(document, dict):
        raise ConfigError(path, None, f"expected a mapping with 'modules', found {_kind(document)}")
    reject_unknown_keys(path, "", document, TOP_LEVEL_KEYS, ConfigError)
    if "modules" not in document:
        raise ConfigError(path, "modules", "missing; name at least one module (for example 'default')")
    modules_doc = document["modules"]
    if not isinstance(modules_doc, dict):
        raise ConfigError(path, "modules", f"must be a mapping of module names, found {_kind(modules_doc)}")
    if not modules_doc:
        raise ConfigError(path, "modules", "is empty; name at least one module (for example 'default')")
    modules = {}
    for name, body in modules_doc.items():
        if not isinstance(name, str) or not MODULE_NAME.match(name):
            raise ConfigError(path, f"modules.{name}", "a module name is letters, digits, '_', '.' or '-'")
        modules[name] = _module(path, name, body, default_timeout, pin_files)
    allowed = _allowed_targets(
        path, "allowed_targets", document.get("allowed_targets"), "allowed_targets" in document
    )
    _require_pin_scopes(path, modules)
    _warn_of_overlapping_pin_scopes(path, modules)
    if allowed is None:
        return ExporterConfig(path=str(path), modules=modules)
    return ExporterConfig(
        path=str(path),
        modules=modules,
        allowed_targets=tuple(rule.entry for rule in allowed),
        rules=allowed,
    )


def _module(path: Path | str, name: str, body: Any, default_timeout: float, pin_files: PinFiles) -> Module:
    key = f"modules.{name}"
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ConfigError(
            path, key, f"must be a mapping (use {{}} for a Room without a PIN), found {_kind(body)}"
        )
    reject_unknown_keys(path, f"{key}.", body, MODULE_KEYS, ConfigError)
    given = [k for k in PIN_KEYS if k in body]
    if len(given) > 1:
        raise ConfigError(path, key, f"give only one of pin_file, pin_env and pin, not {' and '.join(given)}")
    pin, source, origin = None, "none", ""
    if given:
        source = given[0]
        pin = _pin(path, f"{key}.{source}", source, body[source], pin_files)
        origin = _pin_origin(path, key, source, body[source])
    timeout = _timeout(path, f"{key}.timeout", body["timeout"]) if "timeout" in body else default_timeout
    discovery = body.get("discovery", False)
    if not isinstance(discovery, bool):
        raise ConfigError(path, f"{key}.discovery", f"must be true or false, found {_kind(discovery)}")
    sessions = body.get("sessions")
    if sessions is not None and not isinstance(sessions, bool):
        raise ConfigError(path, f"{key}.sessions", f"must be true or false, found {_kind(sessions)}")
    return Module(
        name=name,
        pin=pin,
        timeout_seconds=timeout,
        discovery=discovery,
        pin_source=source,
        sessions=sessions,
        collectors=_collectors(path, f"{key}.collectors", body.get("collectors", {})),
        allow_list=_module_allow_list(path, key, body),
        pin_origin=origin,
    )


def _pin_origin(path: Path | str, key: str, source: str, value: str) -> str:
    """Where a module's PIN is read, as the text that identifies it; `value` is already validated. An
    inline PIN is its module's own, so the origin never holds a PIN."""
    if source == "pin_file":
        return f"pin_file {file_named_in(path, value.strip())}"
    if source == "pin_env":
        return f"pin_env {value.strip()}"
    return f"pin in {key}"


def _module_allow_list(path: Path | str, key: str, body: dict[str, Any]) -> AllowList | None:
    rules = _allowed_targets(
        path,
        f"{key}.allowed_targets",
        body.get("allowed_targets"),
        "allowed_targets" in body,
        "leave it out to use the top-level allowed_targets alone",
    )
    return None if rules is None else AllowList(tuple(rule.entry for rule in rules), rules)


def _require_pin_scopes(path: Path | str, modules: dict[str, Module]) -> None:
    """With more than one PIN, every module with a PIN names the Rooms its PIN is for: without its own list
    a probe naming it could send its PIN to a Room of another module."""
    with_pin = [m for m in modules.values() if m.pin is not None]
    if len({m.pin_origin for m in with_pin}) < 2:
        return
    unscoped = [m.name for m in with_pin if m.allow_list is None]
    if not unscoped:
        return
    raise ConfigError(
        path,
        f"modules.{unscoped[0]}.allowed_targets",
        f"missing: the modules {', '.join(m.name for m in with_pin)} read PINs from more than one place, "
        f"so each needs allowed_targets of its own naming the Rooms its PIN is for; add it to "
        f"{', '.join(unscoped)} (or read every PIN from one place)",
    )


def _warn_of_overlapping_pin_scopes(path: Path | str, modules: dict[str, Module]) -> None:
    """One warning per pair of modules with different PINs whose own lists visibly overlap: a Room there
    can be sent either PIN. Modules of one PIN origin may overlap silently: they hold the same PIN."""
    scoped = [m for m in modules.values() if m.pin is not None and m.allow_list is not None]
    for index, first in enumerate(scoped):
        for second in scoped[index + 1 :]:
            if first.pin_origin == second.pin_origin:
                continue
            assert first.allow_list is not None and second.allow_list is not None
            overlap = _overlap(first.allow_list, second.allow_list)
            if overlap is not None:
                log.warning(
                    "modules with different PINs allow the same targets: a Room there can be sent either PIN",
                    extra={
                        "file": str(path),
                        "detail": f"modules {first.name} ({overlap[0]!r}) and {second.name} ({overlap[1]!r})",
                    },
                )


def _overlap(first: AllowList, second: AllowList) -> tuple[str, str] | None:
    """The first pair of entries, one from each list, that visibly allow a common target; None if none."""
    for a in first.rules:
        for b in second.rules:
            if _rules_overlap(a, b):
                return a.entry, b.entry
    return None


def _rules_overlap(a: AllowRule, b: AllowRule) -> bool:
    """Overlapping IP networks; the same name pattern, or a name without `*` that the other's pattern
    matches; with compatible ports either way. A name and an IP entry never visibly overlap (a name's
    addresses are only known at probe time)."""
    if a.port is not None and b.port is not None and a.port != b.port:
        return False
    if isinstance(a, AddressRule) and isinstance(b, AddressRule):
        return a.network.version == b.network.version and a.network.overlaps(b.network)
    if isinstance(a, NameRule) and isinstance(b, NameRule):
        return a.pattern.pattern == b.pattern.pattern or _names_match(a, b) or _names_match(b, a)
    return False


def _names_match(literal: NameRule, pattern: NameRule) -> bool:
    """True when `literal` is a plain name (no `*`) that `pattern` matches."""
    name = _split_port(literal.entry)[0]
    return "*" not in name and pattern.pattern.fullmatch(name) is not None


def _collectors(path: Path | str, key: str, value: Any) -> tuple[tuple[str, bool], ...]:
    """`collectors: {incoming: false, ...}`: the optional methods a module asks for or not."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(path, key, f"must map collector names to true or false, found {_kind(value)}")
    reject_unknown_keys(path, f"{key}.", value, COLLECTORS, ConfigError)
    for name, enabled in value.items():
        if not isinstance(enabled, bool):
            raise ConfigError(path, f"{key}.{name}", f"must be true or false, found {_kind(enabled)}")
    return tuple(value.items())


def _pin(path: Path | str, key: str, source: str, value: Any, pin_files: PinFiles) -> str:
    if source == "pin":
        if isinstance(value, int | float) and not isinstance(value, bool):
            # YAML reads 0123 as octal 83 and drops leading zeros: a PIN must be quoted to survive.
            raise ConfigError(path, key, "must be a quoted string ('0123'), not a number: YAML drops zeros")
        if not isinstance(value, str):
            raise ConfigError(path, key, f"must be a string, found {_kind(value)}")
        pin = value.strip()
        if not pin:
            raise ConfigError(path, key, "is empty; leave the key out for a Room without a PIN")
        log.warning(
            "a PIN is written into the config file; prefer pin_file or pin_env",
            extra={"file": str(path), "detail": key},
        )
        return pin
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, key, f"must be a non-empty string, found {_kind(value)}")
    if source == "pin_file":
        return _pin_from_file(path, key, file_named_in(path, value.strip()), pin_files)
    return _pin_from_env(path, key, value.strip(), pin_files)


def _pin_from_file(path: Path | str, key: str, pin_path: Path, pin_files: PinFiles) -> str:
    try:
        return pin_files.read(pin_path)
    except PinFileError as error:
        raise ConfigError(path, key, str(error)) from None


def _pin_from_env(path: Path | str, key: str, variable: str, pin_files: PinFiles) -> str:
    """The PIN from `$VARIABLE`, or from the file named by `$VARIABLE_FILE` (container-secret style)."""
    value = os.environ.get(variable)
    file_value = os.environ.get(f"{variable}_FILE")
    if value is not None and file_value is not None:
        raise ConfigError(path, key, f"both {variable} and {variable}_FILE are set; set only one")
    if file_value is not None:
        return _pin_from_file(path, f"{key} ({variable}_FILE)", Path(file_value), pin_files)
    if value is None:
        raise ConfigError(path, key, f"the environment variable {variable} (or {variable}_FILE) is not set")
    if not value.strip():
        raise ConfigError(path, key, f"the environment variable {variable} is empty")
    return value.strip()


def _timeout(path: Path | str, key: str, value: Any) -> float:
    try:
        return parse_duration(value, MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS)
    except ValueError as error:
        raise ConfigError(path, key, str(error)) from None


def _allowed_targets(
    path: Path | str,
    key: str,
    value: Any,
    present: bool,
    absent_means: str = "leave it out to allow every target",
) -> tuple[AllowRule, ...] | None:
    """An `allowed_targets` list at `key` (the top-level one or a module's), parsed; None when absent."""
    if not present:
        return None
    if not isinstance(value, list) or not value:
        raise ConfigError(
            path,
            key,
            f"must be a non-empty list of host names or globs, found {_kind(value)}; {absent_means}",
        )
    rules = []
    for index, entry in enumerate(value):
        entry_key = f"{key}[{index}]"
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigError(path, entry_key, f"must be a non-empty string, found {_kind(entry)}")
        try:
            rules.append(parse_allow_entry(entry))
        except AllowEntryError as error:
            raise ConfigError(path, entry_key, f"{echo(entry.strip())} {error}") from None
    return tuple(rules)


IPV4_PATTERN = re.compile(r"[0-9*./]+")
"""Entries made of these characters (and a digit) are IPv4 entries: a host name never ends in a number."""
NAME_PATTERN_LABEL = re.compile(r"[a-z0-9_*-]+")
SCHEME_OR_PATH = "has a scheme or path; write HOST, HOST:PORT, an IP address, a CIDR or a pattern of them"


def parse_allow_entry(entry: str) -> AllowRule:
    """One allow-list entry as a rule; AllowEntryError saying what is wrong with it."""
    text = entry.strip().lower()
    if "://" in text:
        raise AllowEntryError(SCHEME_OR_PATH)
    where, port = _split_port(text)
    if ":" in where:
        return AddressRule(text, _ipv6_network(where), port)
    if IPV4_PATTERN.fullmatch(where) and any(c.isdigit() for c in where):
        return AddressRule(text, _ipv4_network(where), port)
    if "/" in where:
        raise AllowEntryError(SCHEME_OR_PATH)
    return NameRule(text, _name_pattern(where), port)


def _split_port(text: str) -> tuple[str, int | None]:
    """`[ADDR]:PORT`, `[ADDR]`, bare IPv6 (no port), `HOST:PORT` or `HOST`, as (where, port)."""
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or ":" not in inside:
            raise AllowEntryError(
                "has a '[' that does not enclose an IPv6 address: write [ADDR] or [ADDR]:PORT"
            )
        if not rest:
            return inside, None
        if not rest.startswith(":"):
            raise AllowEntryError("has text after ']' that is not :PORT")
        return inside, _port(rest[1:])
    if "]" in text:
        raise AllowEntryError("has ']' without '['; write an IPv6 address with a port as [ADDR]:PORT")
    if text.count(":") > 1:
        return text, None  # a bare IPv6 address or CIDR; with a port it is written [ADDR]:PORT
    where, colon, port = text.partition(":")
    return where, (_port(port) if colon else None)


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise AllowEntryError("has a port that is not a number; leave the port out to allow every port")
    port = int(text)
    if not 1 <= port <= 65535:
        raise AllowEntryError(f"has port {port}, out of range: a port is 1 to 65535")
    return port


def _ipv6_network(where: str) -> Network:
    if "*" in where:
        raise AllowEntryError("has '*' in an IPv6 entry; write a CIDR instead, as in fd00::/64")
    return _network(where, "an IPv6 address or CIDR")


def _ipv4_network(where: str) -> Network:
    """An IPv4 address, CIDR, or pattern whose `*`s stand for whole trailing octets (10.20.*.* = /16)."""
    if "*" not in where:
        return _network(where, "an IPv4 address or CIDR")
    if "/" in where:
        raise AllowEntryError("mixes '*' and a CIDR; write one of them")
    octets = where.split(".")
    if len(octets) != 4:
        raise AllowEntryError("is an IPv4 pattern without four octets; write it as in 10.20.30.*")
    if any("*" in octet and octet != "*" for octet in octets):
        raise AllowEntryError("has a '*' that is not a whole octet; '*' stands for all of one octet")
    fixed = octets.index("*")
    if any(octet != "*" for octet in octets[fixed:]):
        raise AllowEntryError(
            "has a '*' before a fixed octet; '*' stands only for the last octets (10.20.*.*): "
            "for other ranges write a CIDR"
        )
    prefix = ".".join(octets[:fixed] + ["0"] * (4 - fixed))
    return _network(f"{prefix}/{8 * fixed}", "an IPv4 pattern")


def _network(text: str, kind: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        if "host bits set" in str(error):
            loose = ipaddress.ip_network(text, strict=False)
            raise AllowEntryError(
                f"is a CIDR with host bits set: write {loose} for the network, or the address alone"
            ) from None
        raise AllowEntryError(f"is not {kind}") from None


def _name_pattern(where: str) -> re.Pattern[str]:
    """A name pattern as an anchored regex: `*` within one label, a leading `**.` for one or more labels."""
    if not where.isascii():
        raise AllowEntryError("is not ASCII; write an internationalised name in its xn-- form")
    labels = where.split(".")
    prefix = ""
    if labels[0] == "**":
        labels = labels[1:]
        prefix = rf"(?:{NAME_CHARS}+\.)+"
        if not labels or labels == [""]:
            raise AllowEntryError("has nothing after '**.'; to allow every target, leave allowed_targets out")
    if any(label == "" for label in labels):
        raise AllowEntryError("has an empty label (two dots in a row, or a dot at an end)")
    if all(label == "*" for label in labels):
        raise AllowEntryError(
            "is only '*' labels, so it would allow names of any domain; name the domain, as in "
            "*.example.org (every IPv4 address is 0.0.0.0/0)"
        )
    parts = []
    for label in labels:
        if not NAME_PATTERN_LABEL.fullmatch(label):
            raise AllowEntryError(
                "has a character a host name cannot have: use letters, digits, '-', '_', '*' and dots"
            )
        if "**" in label:
            raise AllowEntryError("has '**' that is not the whole first label; write it as in **.example.org")
        if label == "*":
            parts.append(f"{NAME_CHARS}+")
        else:
            parts.append(f"{NAME_CHARS}*".join(re.escape(piece) for piece in label.split("*")))
    return re.compile(prefix + r"\.".join(parts))


def _kind(value: Any) -> str:
    """A value's type in YAML words, so a message never echoes a value that might be a secret."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
