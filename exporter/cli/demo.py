"""`demo`: a fleet of emulated Rooms with different lives behind one exporter in multi-target mode, on this
machine only, so a first look shows what an operator of many Rooms sees: the status page, probes, and (with
`make demo-stack`) Prometheus and Alertmanager loaded with the repository's rules and alerting config.

The demo probes its own Rooms, as Prometheus's `trueconf-probe` job of prometheus/prometheus.yml would, so the
status page fills without anyone following a link.
"""

from __future__ import annotations

import http.client
import logging
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from exporter.cli.emulator import require_emulator_extra
from exporter.cli.options import (
    DEFAULT_TIMEOUT_SECONDS,
    ListenAddressType,
    duration_option,
    logging_options,
    option,
    seconds,
)
from exporter.cli.serve import run_server
from exporter.fleet.reload import ConfigHolder
from exporter.logs import setup_logging
from exporter.room import parse_target
from exporter.web.settings import ExporterSettings

if TYPE_CHECKING:
    from exporter.emulator.server import RunningEmulator

log = logging.getLogger("exporter")

DEMO_LISTEN_ADDRESS = "127.0.0.1:18765"
DEMO_CONFIG = """\
# The demo's --config.file: Rooms without a PIN, on this machine only.
modules:
  default:
    timeout: 3s
allowed_targets: ["127.0.0.1"]
"""
PROBE_MODULE = "default"
"""The module prometheus/prometheus.yml's `trueconf-probe` job asks for."""
PROBE_INTERVAL_SECONDS = 15.0
"""prometheus/prometheus.yml's scrape_interval."""
PROBE_TIMEOUT_SECONDS = 10.0
"""prometheus/prometheus.yml's scrape_timeout, sent as Prometheus sends it."""
PROBER_STOP_SECONDS = 1.0
"""How long stopping waits for a probe in flight (the prober is a daemon thread: it never holds the exit)."""


class Prober:
    """Asks the demo's exporter for /probe?target=ROOM&module=default for every Room, at once and then every
    `interval` seconds, as Prometheus would: the status page then shows each Room within one interval.

    It goes through the exporter's HTTP port (not its code), so what it fills is exactly what a scrape fills.
    A failed probe is logged at debug level and tried again next round.
    """

    def __init__(self, base_url: str, targets: Sequence[str], interval: float) -> None:
        self.urls = [
            f"{base_url}/probe?{urllib.parse.urlencode({'target': target, 'module': PROBE_MODULE})}"
            for target in targets
        ]
        self.interval = interval
        self._stop = threading.Event()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
        self._thread = threading.Thread(target=self._run, name="demo-prober", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(PROBER_STOP_SECONDS)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            for url in self.urls:
                if self._stop.is_set():
                    return
                self._probe(url)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _probe(self, url: str) -> None:
        request = urllib.request.Request(  # noqa: S310 - the demo's own exporter, an http:// URL
            url,
            headers={
                "Accept": "text/plain",
                "User-Agent": "trueconf-exporter-demo",
                "X-Prometheus-Scrape-Timeout-Seconds": f"{PROBE_TIMEOUT_SECONDS:g}",
            },
        )
        try:
            with self._opener.open(request, timeout=PROBE_TIMEOUT_SECONDS) as response:
                response.read()
        except (OSError, http.client.HTTPException) as error:  # urllib's URLError and HTTPError are OSErrors
            log.debug("demo probe failed", extra={"url": url, "error": str(error)})


def stop_all(emulators: Sequence[RunningEmulator]) -> None:
    """Stop the Rooms together: each waits up to a second for the exporter's idle sessions to answer its
    close frame (they do not: nobody reads them), and one after another that was a second per Room."""
    stoppers = [threading.Thread(target=e.stop, name="demo-room-stop", daemon=True) for e in emulators]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join()


def banner(base: str, first_port: int, probe_interval: float) -> str:
    """What the demo prints once it listens: where to look, and what each Room shows and raises."""
    from exporter.emulator.fleet import ROOMS  # noqa: PLC0415 - needs the optional extra

    probing = (
        f"the demo probes every Room every {probe_interval:g} s, as Prometheus would"
        if probe_interval > 0
        else "filled by Prometheus's scrapes"
    )
    lines = [f"demo: {len(ROOMS)} emulated Rooms and one exporter; Ctrl-C stops them all", ""]
    lines.append(f"  status page  {base}/  {probing}")
    lines.append(
        "  alerts: what prometheus/alerts.yml raises in Prometheus (make demo-stack), from its first scrape"
    )
    for room in ROOMS:
        target = f"127.0.0.1:{room.port(first_port)}"
        lines.append("")
        named = f"{room.display_name} ({room.peer_id})" if room.reports_name else room.display_name
        lines.append(f"  {named}, {target}, site {room.site}")
        lines.append(f"      {room.life}")
        lines.append(f"      alerts: {room.alert_text}")
        lines.append(f"      {base}/probe?target={target}&debug=true")
    lines += ["", "  Prometheus and Alertmanager with this repository's rules: make demo-stack"]
    return "\n".join(lines)


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
@duration_option(
    "--rooms.probe-interval",
    "probe_interval",
    low=0,
    high=3600,
    default=seconds(PROBE_INTERVAL_SECONDS),
    variable="DEMO_PROBE_INTERVAL",
    help="How often the demo probes its Rooms itself through /probe, the first time at once; 0: never "
    "(make demo-stack, where Prometheus probes them).",
)
@logging_options
def demo(
    listen_address: tuple[str, int], first_port: int, probe_interval: float, log_level: str, log_format: str
) -> None:
    """A first look: six emulated Rooms with different lives and one exporter probing them. Ctrl-C stops."""
    setup_logging(log_level, log_format)
    require_emulator_extra()
    from exporter.emulator.fleet import ROOMS, emulated_room  # noqa: PLC0415 - needs the optional extra
    from exporter.emulator.server import RunningEmulator  # noqa: PLC0415

    running: list[RunningEmulator] = []
    probers: list[Prober] = []
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
            click.echo(banner(base, first_port, probe_interval))
            sys.stdout.flush()
            if probe_interval > 0:
                targets = [f"127.0.0.1:{room.port(first_port)}" for room in ROOMS]
                probers.append(Prober(base, targets, probe_interval))
                probers[-1].start()  # its first requests wait in the listen queue until the server serves

        run_server(
            settings,
            listen_address,
            config=ConfigHolder(config_file, DEFAULT_TIMEOUT_SECONDS),
            announce=announce,
        )
    finally:
        for prober in probers:
            prober.stop()
        stop_all(running)
        shutil.rmtree(workdir, ignore_errors=True)
