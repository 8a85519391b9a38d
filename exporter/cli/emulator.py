"""`emulate`: the built-in TrueConf Room emulator on its own, misbehaving on request.

The emulator's WebSocket server library is the optional `[emulator]` extra, so it is imported only when an
emulator starts (here or in `demo`); without it the command says in one line how to get it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from exporter.cli.options import duration_option, logging_options, option, seconds
from exporter.cli.room_options import (
    read_pin,
)
from exporter.cli.running import run_until_stopped
from exporter.emulator.faults import Fault
from exporter.emulator.scenario import DEMO, ScenarioError
from exporter.logs import setup_logging

if TYPE_CHECKING:
    from exporter.emulator.server import Ports, RunningEmulator

MISSING_EXTRA = (
    "the emulator needs the 'websockets' package: pip install 'trueconf-exporter[emulator]' "
    "(in a checkout: pip install '.[emulator]'; make run does this for you)"
)


@click.command()
@option(
    "--scenario",
    default=DEMO,
    variable="EMULATOR_SCENARIO",
    help="'demo' (a living Room), 'doc-example' (the documentation's example reply), 'every-method' (a "
    "fixed Room answering every method with every status) or a JSON scenario file.",
)
@option("--host", default="127.0.0.1", variable="EMULATOR_HOST", help="Address to listen on.")
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
@duration_option(
    "--slow-reply-seconds",
    low=0,
    default=seconds(30.0),
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
    emulator, ports = start_emulator(
        scenario,
        host=host,
        websocket_port=port,
        web_port=web_port,
        pin=read_pin(None, pin_file),
        fault=Fault(fault),
        slow_reply_seconds=slow_reply_seconds,
    )
    click.echo(
        f"emulator ready: websocket ws://{host}:{ports.websocket} "
        f"web http://{host}:{ports.web}/public/default/config.json",
    )
    sys.stdout.flush()
    run_until_stopped(emulator.serve_forever)


def require_emulator_extra() -> None:
    """The one-line hint, as an error, when the `[emulator]` extra (the `websockets` package) is missing."""
    try:
        import websockets  # noqa: F401, PLC0415 - only to learn whether it is installed
    except ModuleNotFoundError:
        raise click.ClickException(MISSING_EXTRA) from None


def start_emulator(scenario: str, **settings: Any) -> tuple[RunningEmulator, Ports]:
    """A running emulator and its bound ports; `settings` are EmulatorSettings' fields.

    One-line errors for a missing `[emulator]` extra, a bad scenario and a port that cannot be bound.
    """
    require_emulator_extra()
    from exporter.emulator.server import (  # noqa: PLC0415 - the optional extra, only when asked for
        EmulatorSettings,
        RunningEmulator,
        build_room,
    )

    try:
        room_settings = EmulatorSettings(**settings)
        emulator = RunningEmulator(build_room(scenario, room_settings))
    except ScenarioError as error:
        raise click.BadParameter(str(error), param_hint="--scenario") from None
    try:
        ports = emulator.start()
    except OSError as error:
        wanted = f"ports {room_settings.websocket_port} (WebSocket) and {room_settings.web_port} (web)"
        raise click.ClickException(
            f"the emulator cannot listen on {room_settings.host}, {wanted}: {error.strerror or error}"
        ) from None
    return emulator, ports
