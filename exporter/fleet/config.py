"""`--config.file`: named modules (how to read a Room) and the allow-list of targets `/probe` may reach.

    modules:
      default:
        pin_file: /run/secrets/room_pin   # or pin_env: ROOM_PIN (also reads ROOM_PIN_FILE), or pin: (warned)
        timeout: 5s                       # seconds: 5, 5s, 2.5s or 500ms; --timeout when left out
        discovery: false                  # true: a bare HOST[:PORT] is the Room's web UI; ask it for the port
      open-rooms: {}                      # no PIN: unsecured auth
    allowed_targets:                      # optional; shell-style globs (fnmatch), case-insensitive
      - "room-*.example.org"              #   matched against HOST and against HOST:PORT
      - "10.0.0.5:8765"

Loading is all or nothing: any mistake raises ConfigError naming the file, the key and the problem, and the
message never contains a PIN (not even a YAML error's snippet of the offending line).
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from exporter.files.pinfile import PinFileError, read_pin_file
from exporter.files.yamlfile import YamlFileError, file_named_in, read_yaml, reject_unknown_keys
from exporter.room import RoomTarget, parse_target
from exporter.room.target import host_port

log = logging.getLogger(__name__)

DEFAULT_MODULE = "default"
TOP_LEVEL_KEYS = ("modules", "allowed_targets")
MODULE_KEYS = ("pin_file", "pin_env", "pin", "timeout", "discovery")
PIN_KEYS = ("pin_file", "pin_env", "pin")
MIN_TIMEOUT_SECONDS = 0.05
MAX_TIMEOUT_SECONDS = 600.0
"""The range of a collection timeout, in a module and in --timeout alike."""
MODULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")


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

    def parse_target(self, text: str) -> RoomTarget:
        """A target as written in a probe: a bare HOST[:PORT] means the web UI when discovery is on."""
        text = text.strip()
        if self.discovery and text and "://" not in text:
            text = f"http://{text}"
        return parse_target(text)


@dataclass(frozen=True)
class ExporterConfig:
    """A validated config file."""

    path: str
    modules: dict[str, Module]
    allowed_targets: tuple[str, ...] | None = None
    """None: no allow-list (every target may be probed); otherwise the globs a target must match."""

    def allows(self, target: RoomTarget) -> bool:
        """True when the target's host, or its HOST:PORT, matches an allow-list entry, or there is no list."""
        if self.allowed_targets is None:
            return True
        host = target.host.lower()
        with_port = host_port(host, target.port)
        return any(
            fnmatchcase(host, pattern) or fnmatchcase(with_port, pattern) for pattern in self.allowed_targets
        )


def load_config(path: Path | str, default_timeout: float) -> ExporterConfig:
    """Read and validate the config file; ConfigError on the first mistake found."""
    path = Path(path)
    document = read_yaml(path, ConfigError)
    return parse_config(document, path, default_timeout)


def parse_config(document: Any, path: Path | str, default_timeout: float) -> ExporterConfig:
    """Validate a parsed document; `path` names the file in messages and anchors relative pin_files."""
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
        modules[name] = _module(path, name, body, default_timeout)
    allowed = _allowed_targets(path, document.get("allowed_targets"), "allowed_targets" in document)
    return ExporterConfig(path=str(path), modules=modules, allowed_targets=allowed)


def _module(path: Path | str, name: str, body: Any, default_timeout: float) -> Module:
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
    pin, source = None, "none"
    if given:
        source = given[0]
        pin = _pin(path, f"{key}.{source}", source, body[source])
    timeout = _timeout(path, f"{key}.timeout", body["timeout"]) if "timeout" in body else default_timeout
    discovery = body.get("discovery", False)
    if not isinstance(discovery, bool):
        raise ConfigError(path, f"{key}.discovery", f"must be true or false, found {_kind(discovery)}")
    return Module(name=name, pin=pin, timeout_seconds=timeout, discovery=discovery, pin_source=source)


def _pin(path: Path | str, key: str, source: str, value: Any) -> str:
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
        return _pin_from_file(path, key, file_named_in(path, value.strip()))
    return _pin_from_env(path, key, value.strip())


def _pin_from_file(path: Path | str, key: str, pin_path: Path) -> str:
    try:
        return read_pin_file(pin_path)
    except PinFileError as error:
        raise ConfigError(path, key, str(error)) from None


def _pin_from_env(path: Path | str, key: str, variable: str) -> str:
    """The PIN from `$VARIABLE`, or from the file named by `$VARIABLE_FILE` (container-secret style)."""
    value = os.environ.get(variable)
    file_value = os.environ.get(f"{variable}_FILE")
    if value is not None and file_value is not None:
        raise ConfigError(path, key, f"both {variable} and {variable}_FILE are set; set only one")
    if file_value is not None:
        return _pin_from_file(path, f"{key} ({variable}_FILE)", Path(file_value))
    if value is None:
        raise ConfigError(path, key, f"the environment variable {variable} (or {variable}_FILE) is not set")
    if not value.strip():
        raise ConfigError(path, key, f"the environment variable {variable} is empty")
    return value.strip()


def _timeout(path: Path | str, key: str, value: Any) -> float:
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := DURATION.match(value)):
        seconds = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    if seconds is None or not math.isfinite(seconds):
        raise ConfigError(path, key, f"must be seconds (5, 2.5s or 500ms), found {value!r}")
    if not MIN_TIMEOUT_SECONDS <= seconds <= MAX_TIMEOUT_SECONDS:
        raise ConfigError(
            path,
            key,
            f"must be between {MIN_TIMEOUT_SECONDS:g}s and {MAX_TIMEOUT_SECONDS:g}s, found {seconds:g}s",
        )
    return seconds


def _allowed_targets(path: Path | str, value: Any, present: bool) -> tuple[str, ...] | None:
    if not present:
        return None
    if not isinstance(value, list) or not value:
        raise ConfigError(
            path,
            "allowed_targets",
            f"must be a non-empty list of host names or globs, "
            f"found {_kind(value)}; leave it out to allow every target",
        )
    patterns = []
    for index, entry in enumerate(value):
        key = f"allowed_targets[{index}]"
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigError(path, key, f"must be a non-empty string, found {_kind(entry)}")
        pattern = entry.strip().lower()
        if "://" in pattern or "/" in pattern:
            raise ConfigError(
                path, key, f"{entry!r} has a scheme or path; write HOST, HOST:PORT or a glob of them"
            )
        patterns.append(pattern)
    return tuple(patterns)


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
