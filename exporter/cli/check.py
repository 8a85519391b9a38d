"""`check`: read the Room once, print what `/metrics` would show and a one-line verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from prometheus_client import CollectorRegistry, generate_latest

from exporter.cli.options import (
    logging_options,
)
from exporter.cli.room_options import (
    collector_options,
    collectors_given,
    read_pin,
    require_supported_websocket_client,
    room_options,
)
from exporter.collect.collection import collect_room
from exporter.collect.families import BuildInfoCollector, RoomCollector
from exporter.collect.verdict import verdict
from exporter.logs import setup_logging
from exporter.methods import methods_for
from exporter.room import RoomRequest, RoomTarget


@click.command()
@room_options
@collector_options
@logging_options
def check(
    target: RoomTarget,
    pin: str | None,
    pin_file: Path | None,
    timeout: float,
    max_message_bytes: int,
    log_level: str,
    log_format: str,
    **collectors: bool,
) -> None:
    """Read the Room once, print its metrics and a verdict.

    Exit 0 if it answered, 1 if not, 2 for a mistake in a flag or a file.
    """
    setup_logging(log_level, log_format)
    require_supported_websocket_client()
    methods = methods_for(dict(collectors_given(collectors)))
    request = RoomRequest(target, read_pin(pin, pin_file), methods, max_message_bytes)
    collection = collect_room(request, timeout)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RoomCollector(lambda: collection))
    registry.register(BuildInfoCollector())
    click.echo(generate_latest(registry).decode(), nl=False)
    click.echo(verdict(collection))
    sys.exit(0 if collection.up else 1)
