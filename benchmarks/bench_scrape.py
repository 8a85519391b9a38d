"""Scrape latency figures: 100 scrapes of /metrics and 100 bare Room round trips against the emulator.

Prints median and 95th percentile in milliseconds; measures, never asserts (run it with `make bench`).
The emulator serves the documentation's example reply; both run in this process on loopback, over real
sockets and the real WebSocket protocol, so the figures are the exporter's cost plus loopback, not a network.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import urllib.request

from timing import measure  # beside this script: benchmarks/ is the script's first path entry

from exporter.emulator.scenario import load_scenario
from exporter.emulator.server import EmulatedRoom, EmulatorSettings, RunningEmulator
from exporter.room import Deadline, parse_target
from exporter.room.client import fetch_room
from exporter.room.request import RoomRequest
from exporter.web.app import ExporterApp
from exporter.web.server import make_http_server
from exporter.web.settings import ExporterSettings


def report(name: str, durations: list[float]) -> None:
    ms = sorted(d * 1000 for d in durations)
    p95 = ms[max(0, round(0.95 * len(ms)) - 1)]
    print(
        f"{name:<34} n={len(ms):<4} median={statistics.median(ms):7.2f} ms  "
        f"p95={p95:7.2f} ms  max={ms[-1]:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--scenario", default="doc-example")
    args = parser.parse_args()

    settings = EmulatorSettings(websocket_port=0, web_port=0)
    emulator = RunningEmulator(EmulatedRoom(settings, scenario=load_scenario(args.scenario)))
    ports = emulator.start()
    target = parse_target(f"ws://127.0.0.1:{ports.websocket}")
    server = make_http_server(ExporterApp(ExporterSettings(target, None, 5.0)), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    metrics_url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def scrape() -> None:
        with opener.open(metrics_url, timeout=10) as response:
            body = response.read()
        if b"trueconf_up 1.0" not in body:
            raise SystemExit(f"scrape failed:\n{body.decode()}")

    def round_trip() -> None:
        fetch_room(RoomRequest(target, None), Deadline(5.0))

    try:
        report("bare round trip (connect+auth+req)", measure(round_trip, args.runs, warmup=5))
        report("scrape of /metrics", measure(scrape, args.runs, warmup=5))
    finally:
        server.shutdown()
        emulator.stop()


if __name__ == "__main__":
    main()
