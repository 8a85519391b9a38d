"""The options that say which Room to read and how, shared by `serve` and `check`: target, PIN, timeout,
message limit, the optional methods (collectors), and the Room sessions `serve` keeps."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from exporter.cli.options import (
    DEFAULT_TIMEOUT_SECONDS,
    FC,
    _TargetParamType,
    apply,
    duration_option,
    option,
    seconds,
)
from exporter.files.pinfile import PinFileError, PinFiles
from exporter.fleet.config import MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS
from exporter.methods import COLLECTORS, OPTIONAL_METHODS, OUTGOING_METHOD
from exporter.room import RoomTarget, TargetError, parse_target
from exporter.room.budget import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SHARED_BYTES, FREE_BYTES
from exporter.room.frames import (
    UnsupportedWebSocketClientError,
    check_websocket_client,
)
from exporter.room.sessions import DEFAULT_IDLE_SECONDS, DEFAULT_MAX_SESSIONS

DEFAULT_TARGET = "ws://127.0.0.1:8765"
NO_PIN = "for a Room without a PIN"
log = logging.getLogger("exporter")


class TargetType(_TargetParamType):
    name = "TARGET"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> RoomTarget:
        if isinstance(value, RoomTarget):
            return value
        try:
            return parse_target(str(value))
        except TargetError as error:
            self.fail(str(error), param, ctx)


def read_pin(pin: str | None, pin_file: Path | None) -> str | None:
    """The PIN from `--pin` or `--pin-file` (stripped); None means unsecured auth. Never echoes the PIN.

    A PIN given on the command line is warned about (every user of the machine can read it in the process
    list); a PIN file others can read is warned about by PinFiles."""
    if pin is not None and pin_file is not None:
        raise click.UsageError("--pin and --pin-file are mutually exclusive: give one")
    if pin_file is not None:
        try:
            return PinFiles().read(pin_file)  # read once, at start
        except PinFileError as error:
            raise click.BadParameter(str(error), param_hint="--pin-file") from None
    if pin is not None and not pin.strip():
        raise click.BadParameter(f"the PIN is empty; leave it out {NO_PIN}", param_hint="--pin")
    if pin is not None and _given_on_the_command_line("pin"):
        log.warning(
            "--pin is on the command line, where every user of this machine can read it (ps); "
            "use --pin-file or TRUECONF_EXPORTER_PIN instead"
        )
    return pin.strip() if pin is not None else None


def _given_on_the_command_line(name: str) -> bool:
    context = click.get_current_context(silent=True)
    return context is not None and context.get_parameter_source(name) == ParameterSource.COMMANDLINE


def require_supported_websocket_client() -> None:
    """At start-up, never at a scrape: a websocket-client the exporter cannot use is one line, exit 1."""
    try:
        check_websocket_client()
    except UnsupportedWebSocketClientError as error:
        raise click.ClickException(str(error)) from None


def room_options(command: FC) -> FC:
    """The options that say which Room to read and how: shared by `serve` and `check`."""
    return apply(
        command,
        option(
            "--target",
            type=TargetType(),
            default=DEFAULT_TARGET,
            variable="TARGET",
            help="The Room: ws://HOST:PORT, HOST[:PORT] (WebSocket port, 8765 by default), or "
            "http://HOST[:PORT] to discover the WebSocket port from the Room's web UI.",
        ),
        option(
            "--pin",
            variable="PIN",
            default=None,
            empty_hint=NO_PIN,
            help="The Room's PIN. Prefer --pin-file or the environment variable: a command line "
            "is visible to every user of the machine (a warning says so).",
        ),
        option(
            "--pin-file",
            type=click.Path(path_type=Path, dir_okay=False),
            variable="PIN_FILE",
            default=None,
            empty_hint=NO_PIN,
            help="A file holding the Room's PIN (whitespace stripped), readable by you alone (a warning "
            "names a file others can read).",
        ),
        duration_option(
            "--timeout",
            low=MIN_TIMEOUT_SECONDS,
            high=MAX_TIMEOUT_SECONDS,
            default=seconds(DEFAULT_TIMEOUT_SECONDS),
            variable="TIMEOUT",
            help="How long one whole collection may take: discovery, connect, auth and reply.",
        ),
        option(
            "--max-message-bytes",
            type=click.IntRange(1024, DEFAULT_SHARED_BYTES + FREE_BYTES),
            default=DEFAULT_MAX_MESSAGE_BYTES,
            variable="MAX_MESSAGE_BYTES",
            help="Refuse any one message from the Room larger than this (reason protocol) "
            "before reading it, so a misbehaving Room cannot exhaust the exporter's memory; at most what "
            "the exporter reads at once for all Rooms together. One message's parse may cost 14 times this.",
        ),
    )


def collector_options(command: FC) -> FC:
    """--collector.NAME/--no-collector.NAME for each optional method, all on by default."""
    return apply(
        command,
        *(
            option(
                f"--collector.{name.replace('_', '-')}/--no-collector.{name.replace('_', '-')}",
                f"collector_{name}",
                default=True,
                variable=f"COLLECTOR_{name.upper()}",
                help=f"Ask {method.name}: {method.tells} at every scrape. Only {OUTGOING_METHOD} decides "
                "trueconf_up.",
            )
            for method in OPTIONAL_METHODS
            if (name := method.collector)
        ),
    )


def collectors_given(values: dict[str, bool]) -> tuple[tuple[str, bool], ...]:
    """The collector_NAME values click passed, as (name, on) pairs."""
    return tuple((name, values[f"collector_{name}"]) for name in COLLECTORS)


def session_options(command: FC) -> FC:
    """How `serve` keeps Room sessions between scrapes."""
    return apply(
        command,
        option(
            "--room.sessions/--no-room.sessions",
            "sessions",
            default=True,
            variable="ROOM_SESSIONS",
            help="Keep one authorised session per Room between scrapes (one login, one round trip per "
            "scrape); without it every scrape connects and logs in anew. A module's `sessions` overrides it.",
        ),
        duration_option(
            "--room.session-idle-timeout",
            "session_idle_timeout",
            low=1,
            default=seconds(DEFAULT_IDLE_SECONDS),
            variable="ROOM_SESSION_IDLE_TIMEOUT",
            help="How long a session may go unscraped before it is closed.",
        ),
        option(
            "--room.max-sessions",
            "max_sessions",
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_SESSIONS,
            variable="ROOM_MAX_SESSIONS",
            help="Sessions open at most; the least recently scraped closes first.",
        ),
    )
