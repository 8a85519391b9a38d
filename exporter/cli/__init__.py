"""The command line: `serve`, `check`, `emulate` and `demo`, one module each. Flags, environment variables,
nothing else.

Every option also reads an environment variable `TRUECONF_EXPORTER_<NAME>`, shown in `--help`.
"""

from __future__ import annotations

import click

from exporter import __version__
from exporter.cli.check import check
from exporter.cli.demo import demo
from exporter.cli.emulator import emulate
from exporter.cli.options import OneLineErrors
from exporter.cli.serve import serve


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="trueconf-exporter")
def main() -> None:
    """Prometheus exporter for the outgoing file requests of TrueConf Room endpoints."""


for command in (serve, check, emulate, demo):
    main.add_command(command)
