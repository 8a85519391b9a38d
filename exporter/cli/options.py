"""The options the commands share, each also read from a `TRUECONF_EXPORTER_<NAME>` variable (--help)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from exporter.fleet.config import DURATION_FORMS, parse_duration
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
    _DurationParamType = click.ParamType[float]
else:
    _TargetParamType = _ListenAddressParamType = _DurationParamType = click.ParamType

ENV_PREFIX = "TRUECONF_EXPORTER_"
DEFAULT_LISTEN_ADDRESS = ":18765"
DEFAULT_TIMEOUT_SECONDS = 5.0


def env(name: str) -> str:
    return f"{ENV_PREFIX}{name}"


class Option(click.Option):
    """A click option where an empty value means the same from the flag and from its variable: a mistake.

    click takes an empty variable for an unset one, so `TRUECONF_EXPORTER_PIN=""` meant "no PIN" while
    `--pin ""` was refused. Both are refused now, with one line that says what to do instead (`empty_hint`).
    """

    def __init__(self, *args: Any, empty_hint: str = "for its default", **attrs: Any) -> None:
        super().__init__(*args, **attrs)
        self.empty_hint = empty_hint

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        if isinstance(self.envvar, str) and self.envvar in os.environ and not os.environ[self.envvar].strip():
            raise click.BadParameter(f"{self.envvar} is set but empty; unset it {self.empty_hint}")
        return super().resolve_envvar_value(ctx)

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise click.BadParameter(f"the value is empty; leave it out {self.empty_hint}")
        return super().process_value(ctx, value)


def option(*param_decls: str, variable: str, **attrs: Any) -> Callable[[FC], FC]:
    """A click option that also reads TRUECONF_EXPORTER_<variable>, both shown in --help with the default."""
    attrs.setdefault("show_default", True)
    return click.option(*param_decls, cls=Option, envvar=env(variable), show_envvar=True, **attrs)


class DurationType(_DurationParamType):
    """A duration flag: `5`, `2.5s`, `500ms`, `1m` or `1h`, parsed as the config file's `timeout` is (one
    parser, one message), and checked against [low, high]."""

    name = "DURATION"

    def __init__(self, low: float, high: float | None = None) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return parse_duration(value, self.low, self.high)
        except ValueError as error:
            self.fail(str(error), param, ctx)

    def describe(self) -> str:
        """For --help: the forms and the range."""
        bounds = f"{self.low:g}s to {self.high:g}s" if self.high is not None else f"at least {self.low:g}s"
        return f"A duration ({DURATION_FORMS}), {bounds}."


def duration_option(
    *param_decls: str, variable: str, low: float, high: float | None = None, help: str, **attrs: Any
) -> Callable[[FC], FC]:
    """An option holding a duration; --help shows the forms it takes and its range after `help`."""
    kind = DurationType(low, high)
    return option(*param_decls, variable=variable, type=kind, help=f"{help} {kind.describe()}", **attrs)


def seconds(value: float) -> str:
    """A default in seconds as the duration flags write it in --help and the docs: `5s`, `0.5s`, `300s`."""
    return f"{value:g}s"


class OneLineErrors(click.Group):
    """A mistake in a flag or its variable is one line (`Error: ...`), exit status 2, as every other mistake
    in the flags or the files is: click would print the usage and a hint first (four lines)."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:
            raise _one_line(error) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            raise _one_line(error) from None


def _one_line(error: click.UsageError) -> click.ClickException:
    """The error without the usage lines; click's own help-on-no-arguments is left as it is."""
    if type(error).__name__ == "NoArgsIsHelpError":  # click >= 8.2 prints the help through this error
        return error
    return BadInput(error.format_message())


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
    """`--log.level` and `--log.format` (Prometheus's spelling), last in every command's --help; the older
    `--log-level` and `--log-format` are accepted for this release (deprecated in CHANGELOG.md)."""
    return apply(
        command,
        option(
            "--log.level",
            "--log-level",
            "log_level",
            type=click.Choice(LEVELS, case_sensitive=False),
            default="info",
            variable="LOG_LEVEL",
            help="Only log lines at this level or above (--log-level is deprecated).",
        ),
        option(
            "--log.format",
            "--log-format",
            "log_format",
            type=click.Choice(FORMATS),
            default="logfmt",
            variable="LOG_FORMAT",
            help="Log line format (--log-format is deprecated).",
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
        duration_option(
            "--web.read-header-timeout",
            "read_header_timeout",
            low=0.5,
            high=300,
            default=seconds(DEFAULT_READ_HEADER_TIMEOUT_SECONDS),
            variable="WEB_READ_HEADER_TIMEOUT",
            help="How long a client has to send a whole request head (with TLS, first the handshake, then "
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
