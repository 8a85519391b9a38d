"""The options the commands share, each also read from a `TRUECONF_EXPORTER_<NAME>` variable (--help)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from exporter.logs import FORMATS, LEVELS
from exporter.room import RoomTarget
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


class BadInput(click.ClickException):
    """An operator's file or setting the exporter cannot use: one line, exit 2, as for a bad flag."""

    exit_code = 2


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
