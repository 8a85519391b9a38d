"""The options the commands share, each also read from a `TRUECONF_EXPORTER_<NAME>` variable (--help)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from exporter.files.pinfile import PinFileError, read_pin_file
from exporter.fleet.config import MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS
from exporter.logs import FORMATS, LEVELS
from exporter.room import RoomTarget, TargetError, parse_target
from exporter.room.frames import (
    DEFAULT_MAX_MESSAGE_BYTES,
    UnsupportedWebSocketClientError,
    check_websocket_client,
)
from exporter.room.sessions import DEFAULT_IDLE_SECONDS, DEFAULT_MAX_SESSIONS
from exporter.web.server import (
    DEFAULT_MAX_COLLECTIONS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_READ_HEADER_TIMEOUT_SECONDS,
    parse_listen_address,
)

FC = TypeVar("FC", bound=Callable[..., Any])

if TYPE_CHECKING:
    # click >= 8.4 makes ParamType generic in the converted value's type; the click 8.1 that pyproject admits
    # cannot subscript it at run time, so only the type checker sees the parameters.
    _TargetParamType = click.ParamType[RoomTarget]
    _ListenAddressParamType = click.ParamType[tuple[str, int]]
else:
    _TargetParamType = _ListenAddressParamType = click.ParamType

ENV_PREFIX = "TRUECONF_EXPORTER_"
DEFAULT_TARGET = "ws://127.0.0.1:8765"
DEFAULT_LISTEN_ADDRESS = ":18765"
DEFAULT_TIMEOUT_SECONDS = 5.0


def env(name: str) -> str:
    return f"{ENV_PREFIX}{name}"


def option(*param_decls: str, variable: str, **attrs: Any) -> Callable[[FC], FC]:
    """A click option that also reads TRUECONF_EXPORTER_<variable>, both shown in --help with the default."""
    return click.option(*param_decls, envvar=env(variable), show_envvar=True, show_default=True, **attrs)


def apply(command: FC, *decorators: Callable[[FC], FC]) -> FC:
    """Apply option decorators in reading order (the first one listed is the first in --help)."""
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


class TargetType(_TargetParamType):
    name = "TARGET"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> RoomTarget:
        if isinstance(value, RoomTarget):
            return value
        try:
            return parse_target(str(value))
        except TargetError as error:
            self.fail(str(error), param, ctx)


class ListenAddressType(_ListenAddressParamType):
    name = "HOST:PORT"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_listen_address(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


def read_pin(pin: str | None, pin_file: Path | None) -> str | None:
    """The PIN from `--pin` or `--pin-file` (stripped); None means unsecured auth. Never echoes the PIN."""
    if pin is not None and pin_file is not None:
        raise click.UsageError("--pin and --pin-file are mutually exclusive: give one")
    if pin_file is not None:
        try:
            return read_pin_file(pin_file)
        except PinFileError as error:
            raise click.BadParameter(str(error), param_hint="--pin-file") from None
    if pin is not None and not pin.strip():
        raise click.BadParameter(
            "the PIN is empty; leave it out for a Room without a PIN", param_hint="--pin"
        )
    return pin.strip() if pin is not None else None


class BadInput(click.ClickException):
    """An operator's file or setting the exporter cannot use: one line, exit 2, as for a bad flag."""

    exit_code = 2


def require_supported_websocket_client() -> None:
    """At start-up, never at a scrape: a websocket-client the exporter cannot use is one line, exit 1."""
    try:
        check_websocket_client()
    except UnsupportedWebSocketClientError as error:
        raise click.ClickException(str(error)) from None


def logging_options(command: FC) -> FC:
    """`--log-level` and `--log-format`, last in every command's --help."""
    return apply(
        command,
        option(
            "--log-level",
            type=click.Choice(LEVELS, case_sensitive=False),
            default="info",
            variable="LOG_LEVEL",
            help="Only log lines at this level or above.",
        ),
        option(
            "--log-format",
            type=click.Choice(FORMATS),
            default="logfmt",
            variable="LOG_FORMAT",
            help="Log line format.",
        ),
    )


def listen_address_option(command: FC) -> FC:
    return option(
        "--web.listen-address",
        "listen_address",
        type=ListenAddressType(),
        default=DEFAULT_LISTEN_ADDRESS,
        variable="WEB_LISTEN_ADDRESS",
        help="Address to serve /metrics on.",
    )(command)


def web_server_options(command: FC) -> FC:
    """The HTTP server's bounds: how long a request may take to arrive, how many connections and scrapes."""
    return apply(
        command,
        option(
            "--web.read-header-timeout",
            "read_header_timeout",
            type=click.FloatRange(min=0.5, max=300),
            default=DEFAULT_READ_HEADER_TIMEOUT_SECONDS,
            variable="WEB_READ_HEADER_TIMEOUT",
            help="Seconds a client has to send a whole request head (with TLS, first the handshake, then "
            "the head again); a slower client is disconnected.",
        ),
        option(
            "--web.max-connections",
            "max_connections",
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_CONNECTIONS,
            variable="WEB_MAX_CONNECTIONS",
            help="Connections held at once, one open file each; past them a connection is answered 503 "
            "(or, past a few more, closed).",
        ),
        option(
            "--web.max-collections",
            "max_collections",
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_COLLECTIONS,
            variable="WEB_MAX_COLLECTIONS",
            help="Scrapes of /metrics and /probe in flight at once, one thread each; one more is "
            "answered 503.",
        ),
    )


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
            help="The Room's PIN. Prefer --pin-file or the environment variable: a command line "
            "is visible to every user of the machine.",
        ),
        option(
            "--pin-file",
            type=click.Path(path_type=Path, dir_okay=False),
            variable="PIN_FILE",
            default=None,
            help="A file holding the Room's PIN (whitespace stripped).",
        ),
        option(
            "--timeout",
            type=click.FloatRange(min=MIN_TIMEOUT_SECONDS, max=MAX_TIMEOUT_SECONDS),
            default=DEFAULT_TIMEOUT_SECONDS,
            variable="TIMEOUT",
            help="Seconds one whole collection may take: discovery, connect, auth and reply.",
        ),
        option(
            "--max-message-bytes",
            type=click.IntRange(min=1024),
            default=DEFAULT_MAX_MESSAGE_BYTES,
            variable="MAX_MESSAGE_BYTES",
            help="Refuse any one message from the Room larger than this (reason protocol) "
            "before reading it, so a misbehaving Room cannot exhaust the exporter's memory.",
        ),
    )


COLLECTOR_HELP = {
    "incoming": "getIncomingFilesRequests: the Room's incoming file requests",
    "availability": "getFileTransferAvailability: whether file transfer is allowed",
    "app_state": "getAppState: the Room's connection and call state",
    "system_info": "getSystemInfo: the Room's version (asked once per session)",
}


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
                help=f"Ask {text} at every scrape. Only getOutgoingFilesRequests decides trueconf_up.",
            )
            for name, text in COLLECTOR_HELP.items()
        ),
    )


def collectors_given(values: dict[str, bool]) -> tuple[tuple[str, bool], ...]:
    """The collector_NAME values click passed, as (name, on) pairs."""
    return tuple((name, values[f"collector_{name}"]) for name in COLLECTOR_HELP)


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
        option(
            "--room.session-idle-timeout",
            "session_idle_timeout",
            type=click.FloatRange(min=1),
            default=DEFAULT_IDLE_SECONDS,
            variable="ROOM_SESSION_IDLE_TIMEOUT",
            help="Seconds a session may go unscraped before it is closed.",
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
