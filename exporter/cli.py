"""The command line: `serve`, `check`, `emulate` and `demo`. Flags, environment variables, nothing else.

Every option also reads an environment variable `TRUECONF_EXPORTER_<NAME>`, shown in `--help`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from prometheus_client import CollectorRegistry, generate_latest

from exporter import __version__
from exporter.collection import collect_room
from exporter.collector import BuildInfoCollector, RoomCollector
from exporter.config import MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS, ConfigError
from exporter.emulator import DEMO, EmulatorSettings, Fault, RunningEmulator, ScenarioError, build_room
from exporter.logs import FORMATS, LEVELS, setup_logging
from exporter.pinfile import PinFileError, read_pin_file
from exporter.reload import ConfigHolder
from exporter.room import RoomTarget, TargetError, parse_target
from exporter.room.frames import DEFAULT_MAX_MESSAGE_BYTES
from exporter.verdict import verdict
from exporter.web import ExporterApp, ExporterSettings, make_http_server, parse_listen_address
from exporter.webconfig import WebConfigError, WebConfigWatcher

log = logging.getLogger("exporter")

FC = TypeVar("FC", bound=Callable[..., Any])

ENV_PREFIX = "TRUECONF_EXPORTER_"
DEFAULT_TARGET = "ws://127.0.0.1:8765"
DEFAULT_LISTEN_ADDRESS = ":18765"
DEFAULT_TIMEOUT_SECONDS = 5.0


def env(name: str) -> str:
    return f"{ENV_PREFIX}{name}"


def option(*param_decls: str, variable: str, **attrs: Any) -> Callable[[FC], FC]:
    """A click option that also reads TRUECONF_EXPORTER_<variable>, both shown in --help with the default."""
    return click.option(*param_decls, envvar=env(variable), show_envvar=True, show_default=True, **attrs)


class TargetType(click.ParamType):
    name = "TARGET"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> RoomTarget:
        if isinstance(value, RoomTarget):
            return value
        try:
            return parse_target(str(value))
        except TargetError as error:
            self.fail(str(error), param, ctx)


class ListenAddressType(click.ParamType):
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
            pin = read_pin_file(pin_file)
        except PinFileError as error:
            raise click.BadParameter(str(error), param_hint="--pin-file") from None
        return pin
    if pin is not None and not pin.strip():
        raise click.BadParameter(
            "the PIN is empty; leave it out for a Room without a PIN", param_hint="--pin"
        )
    return pin.strip() if pin is not None else None


def logging_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = option(
        "--log-format",
        type=click.Choice(FORMATS),
        default="logfmt",
        variable="LOG_FORMAT",
        help="Log line format.",
    )(command)
    return option(
        "--log-level",
        type=click.Choice(LEVELS, case_sensitive=False),
        default="info",
        variable="LOG_LEVEL",
        help="Only log lines at this level or above.",
    )(command)


def room_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say which Room to read and how: shared by `serve` and `check`."""
    options = [
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
    ]
    for decorate in reversed(options):
        command = decorate(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="trueconf-exporter")
def main() -> None:
    """Prometheus exporter for the outgoing file requests of TrueConf Room endpoints."""


@main.command()
@room_options
@option(
    "--web.listen-address",
    "listen_address",
    type=ListenAddressType(),
    default=DEFAULT_LISTEN_ADDRESS,
    variable="WEB_LISTEN_ADDRESS",
    help="Address to serve /metrics on.",
)
@option(
    "--collector.process/--no-collector.process",
    "process_metrics",
    default=False,
    variable="COLLECTOR_PROCESS",
    help="Also export the Python process, platform and GC metrics.",
)
@option(
    "--config.file",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    variable="CONFIG_FILE",
    help="YAML with modules (PIN source, timeout, discovery) and allowed_targets, for a fleet "
    "of Rooms probed at /probe?target=HOST&module=NAME. With it, /metrics carries only the "
    "exporter's own metrics and --target/--pin/--pin-file are ignored. Reloaded on SIGHUP "
    "and POST /-/reload.",
)
@option(
    "--web.config.file",
    "web_config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    variable="WEB_CONFIG_FILE",
    help="Prometheus exporter-toolkit web config: TLS (tls_server_config) and basic auth "
    "(basic_auth_users, bcrypt hashes). Re-read when it changes.",
)
@logging_options
def serve(
    target: RoomTarget,
    pin: str | None,
    pin_file: Path | None,
    timeout: float,
    max_message_bytes: int,
    listen_address: tuple[str, int],
    process_metrics: bool,
    config_file: Path | None,
    web_config_file: Path | None,
    log_level: str,
    log_format: str,
) -> None:
    """Serve the Room's metrics, read at every scrape of /metrics (or of /probe with --config.file)."""
    setup_logging(log_level, log_format)
    web_config = load_web_config_for_serve(web_config_file)
    config = load_config_for_serve(config_file, timeout)
    settings = ExporterSettings(
        target=target,
        pin=read_pin(pin, pin_file) if config is None else None,
        timeout_seconds=timeout,
        process_metrics=process_metrics,
        max_message_bytes=max_message_bytes,
    )
    run_server(settings, listen_address, config=config, web_config=web_config)


def load_web_config_for_serve(path: Path | None) -> WebConfigWatcher | None:
    """The watched web config, or a one-line start-up error naming the file, the key and the problem."""
    if path is None:
        return None
    try:
        return WebConfigWatcher(path)
    except WebConfigError as error:
        raise click.ClickException(f"invalid --web.config.file: {error}") from None


def load_config_for_serve(path: Path | None, default_timeout: float) -> ConfigHolder | None:
    """The config file for multi-target mode, validated; says which single-target options it overrides."""
    if path is None:
        return None
    try:
        holder = ConfigHolder(path, default_timeout)
    except ConfigError as error:
        raise click.ClickException(f"invalid --config.file: {error}") from None
    context = click.get_current_context()
    ignored = [
        f"--{name.replace('_', '-')}"
        for name in ("target", "pin", "pin_file")
        if context.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    ]
    if ignored:
        log.warning(
            "ignored with --config.file: Rooms are probed through /probe with the config's modules",
            extra={"detail": ", ".join(ignored)},
        )
    config = holder.config
    if config.allowed_targets is None and any(m.pin is not None for m in config.modules.values()):
        log.warning(
            "no allowed_targets: /probe connects to any host it is given, sending the module's PIN",
            extra={"file": str(path)},
        )
    return holder


def run_server(
    settings: ExporterSettings,
    listen_address: tuple[str, int],
    config: ConfigHolder | None = None,
    web_config: WebConfigWatcher | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C; `announce` is told the metrics URL once the port is bound."""
    host, port = listen_address
    try:
        server = make_http_server(ExporterApp(settings, config), host, port, web_config)
    except OSError as error:
        raise click.ClickException(
            f"cannot listen on {host or '*'}:{port}: {error.strerror or error}"
        ) from None
    bound_port = server.server_address[1]
    shown_host = host if host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    scheme = "https" if web_config is not None and web_config.current().tls is not None else "http"
    url = f"{scheme}://{'[' + shown_host + ']' if ':' in shown_host else shown_host}:{bound_port}/metrics"
    serving = {"file": str(config.path)} if config is not None else {"target": str(settings.target)}
    log.info("exporter listening", extra={"address": f"{host or '*'}:{bound_port}", "url": url, **serving})
    if announce is not None:
        announce(url)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if config is not None:
        # The handler only starts a thread: reading files and logging do not belong in a signal handler.
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=config.reload, daemon=True).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@main.command()
@room_options
@logging_options
def check(
    target: RoomTarget,
    pin: str | None,
    pin_file: Path | None,
    timeout: float,
    max_message_bytes: int,
    log_level: str,
    log_format: str,
) -> None:
    """Read the Room once, print its metrics and a verdict; exit 0 if it answered, 1 otherwise."""
    setup_logging(log_level, log_format)
    collection = collect_room(target, read_pin(pin, pin_file), timeout, max_message_bytes)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RoomCollector(lambda: collection))
    registry.register(BuildInfoCollector())
    click.echo(generate_latest(registry).decode(), nl=False)
    click.echo(verdict(collection))
    sys.exit(0 if collection.up else 1)


@main.command()
@option(
    "--scenario",
    default=DEMO,
    variable="EMULATOR_SCENARIO",
    help="'demo' (a living Room), 'doc-example' (the documentation's example reply) or a JSON file.",
)
@option(
    "--host",
    default="127.0.0.1",
    variable="EMULATOR_HOST",
    help="Address to listen on.",
)
@option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    variable="EMULATOR_PORT",
    help="WebSocket API port (0: any free port).",
)
@option(
    "--web-port",
    type=click.IntRange(0, 65535),
    default=8080,
    variable="EMULATOR_WEB_PORT",
    help="Web UI port serving /public/default/config.json (0: any free port).",
)
@option(
    "--pin-file",
    type=click.Path(path_type=Path, dir_okay=False),
    variable="EMULATOR_PIN_FILE",
    default=None,
    help="Make the Room require the PIN in this file.",
)
@option(
    "--fault",
    type=click.Choice([f.value for f in Fault]),
    default=Fault.NONE.value,
    variable="EMULATOR_FAULT",
    help="Misbehave this way, to see how the exporter copes.",
)
@option(
    "--slow-reply-seconds",
    type=click.FloatRange(min=0),
    default=30.0,
    variable="EMULATOR_SLOW_REPLY_SECONDS",
    help="With --fault slow-reply: how long the reply is held back.",
)
@logging_options
def emulate(
    scenario: str,
    host: str,
    port: int,
    web_port: int,
    pin_file: Path | None,
    fault: str,
    slow_reply_seconds: float,
    log_level: str,
    log_format: str,
) -> None:
    """Run the built-in TrueConf Room emulator until interrupted."""
    setup_logging(log_level, log_format)
    settings = EmulatorSettings(
        host=host,
        websocket_port=port,
        web_port=web_port,
        pin=read_pin(None, pin_file),
        fault=Fault(fault),
        slow_reply_seconds=slow_reply_seconds,
    )
    emulator = start_emulator(scenario, settings)
    ports = emulator.ports
    assert ports is not None
    click.echo(
        f"emulator ready: websocket ws://{host}:{ports.websocket} "
        f"web http://{host}:{ports.web}/public/default/config.json",
    )
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        emulator.serve_forever()


def start_emulator(scenario: str, settings: EmulatorSettings) -> RunningEmulator:
    try:
        emulator = RunningEmulator(build_room(scenario, settings))
    except ScenarioError as error:
        raise click.BadParameter(str(error), param_hint="--scenario") from None
    try:
        emulator.start()
    except OSError as error:
        raise click.ClickException(f"the emulator cannot listen: {error.strerror or error}") from None
    return emulator


@main.command()
@option(
    "--web.listen-address",
    "listen_address",
    type=ListenAddressType(),
    default=DEFAULT_LISTEN_ADDRESS,
    variable="WEB_LISTEN_ADDRESS",
    help="Address to serve /metrics on.",
)
@logging_options
def demo(listen_address: tuple[str, int], log_level: str, log_format: str) -> None:
    """A first look: a living emulated Room and the exporter reading it, together. Ctrl-C stops both."""
    setup_logging(log_level, log_format)
    emulator = start_emulator(DEMO, EmulatorSettings(websocket_port=0, web_port=0))
    assert emulator.ports is not None
    target = parse_target(f"ws://127.0.0.1:{emulator.ports.websocket}")
    settings = ExporterSettings(target=target, pin=None, timeout_seconds=DEFAULT_TIMEOUT_SECONDS)

    def announce(url: str) -> None:
        click.echo(f"demo: emulated Room at {target}; metrics at {url} (Ctrl-C stops both)")
        sys.stdout.flush()

    try:
        run_server(settings, listen_address, announce=announce)
    finally:
        emulator.stop()
