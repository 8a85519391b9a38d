"""`demo`: a fleet of emulated Rooms with different lives behind one exporter in multi-target mode, on this
machine only, so a first look shows what an operator of many Rooms sees: the status page, probes, and (with
`make demo-stack`) Prometheus and Alertmanager loaded with the repository's rules and alerting config.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import click

from exporter.cli.emulator import require_emulator_extra
from exporter.cli.options import (
    DEFAULT_TIMEOUT_SECONDS,
    ListenAddressType,
    logging_options,
    option,
)
from exporter.cli.serve import run_server
from exporter.fleet.reload import ConfigHolder
from exporter.logs import setup_logging
from exporter.room import parse_target
from exporter.web.settings import ExporterSettings

DEMO_LISTEN_ADDRESS = "127.0.0.1:18765"
DEMO_CONFIG = """\
# The demo's --config.file: Rooms without a PIN, on this machine only.
modules:
  default:
    timeout: 3s
allowed_targets: ["127.0.0.1"]
"""


@click.command()
@option(
    "--web.listen-address",
    "listen_address",
    type=ListenAddressType(),
    default=DEMO_LISTEN_ADDRESS,
    variable="WEB_LISTEN_ADDRESS",
    help="Address the demo's exporter serves on (this machine only, unless you say otherwise).",
)
@option(
    "--rooms.first-port",
    "first_port",
    type=click.IntRange(1024, 65000),
    default=18801,
    variable="DEMO_FIRST_PORT",
    help="The first emulated Room's WebSocket port; the others follow it (prometheus/prometheus.yml "
    "lists the defaults).",
)
@logging_options
def demo(listen_address: tuple[str, int], first_port: int, log_level: str, log_format: str) -> None:
    """A first look: six emulated Rooms with different lives and one exporter probing them. Ctrl-C stops."""
    setup_logging(log_level, log_format)
    require_emulator_extra()
    from exporter.emulator.fleet import ROOMS, emulated_room  # noqa: PLC0415 - needs the optional extra
    from exporter.emulator.server import RunningEmulator  # noqa: PLC0415

    running: list[RunningEmulator] = []
    workdir = Path(tempfile.mkdtemp(prefix="trueconf-demo-"))
    try:
        for room in ROOMS:
            if room.listening:
                emulator = RunningEmulator(emulated_room(room, first_port))
                try:
                    emulator.start()
                except OSError as error:
                    raise click.ClickException(
                        f"the demo Room {room.name} cannot listen on 127.0.0.1:{room.port(first_port)}: "
                        f"{error.strerror or error} (is another demo running? --rooms.first-port moves them)"
                    ) from None
                running.append(emulator)
        config_file = workdir / "trueconf-exporter.yml"
        config_file.write_text(DEMO_CONFIG, encoding="utf-8")
        settings = ExporterSettings(
            target=parse_target("ws://127.0.0.1:1"), pin=None, timeout_seconds=DEFAULT_TIMEOUT_SECONDS
        )

        def announce(url: str) -> None:
            base = url.removesuffix("/metrics")
            lines = [f"demo: {len(ROOMS)} emulated Rooms and one exporter; Ctrl-C stops them all", ""]
            lines.append(f"  status page  {base}/  each Room's latest results, and why it is down")
            for room in ROOMS:
                target = f"127.0.0.1:{room.port(first_port)}"
                lines.append(f"  {room.name:<11}  {room.life}")
                lines.append(f"  {'':<11}  {base}/probe?target={target}&debug=true")
            lines += ["", "  Prometheus and Alertmanager with this repository's rules: make demo-stack"]
            click.echo("\n".join(lines))
            sys.stdout.flush()

        run_server(
            settings,
            listen_address,
            config=ConfigHolder(config_file, DEFAULT_TIMEOUT_SECONDS),
            announce=announce,
        )
    finally:
        for emulator in running:
            emulator.stop()
        shutil.rmtree(workdir, ignore_errors=True)
