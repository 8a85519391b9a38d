#!/usr/bin/env python3
"""The dashboard with a fleet: N emulated Rooms on sites, one exporter, a real Prometheus, every query.

Not part of `make test` (tests/test_dashboard_sites.py runs the same with 14 Rooms); run it with
`.venv/bin/python scripts/dashboard_fleet.py [--rooms 200] [--sites 4]`. It starts the Rooms in this process
(tests/dashboard_fleet.py: a few down, a few not logged in, ages and failures that differ), one
`trueconf-exporter serve --config.file` process and Debian's Prometheus with prometheus/prometheus.yml's
/probe job, each site a static group with its `site` label. Once every Room has been scraped a few times, each
answering Room sends and receives a few files that arrive or fail (for the transfer counters), then it runs
every panel query of the dashboard through Prometheus's HTTP API with the site variable on All, one site
and two sites, as an instant query and (unless the query is instant only, as Grafana runs it) as a range
query over the scrapes so far, and prints how many series each returns (and how many Rooms, for a
worst-first query). It exits 1 if a worst-first panel (topk/bottomk N) returned more than N Rooms, or a query
failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# After the path set-up, so the checkout's code is used.
from tests import dashboard_fleet as df  # noqa: E402
from tests import dashboard_queries as dq  # noqa: E402

SCRAPES = 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=200, help="Rooms in all (default 200)")
    parser.add_argument("--sites", type=int, default=4, help="sites they are spread over (default 4)")
    parser.add_argument("--interval", default="5s", help="Prometheus's scrape interval (default 5s)")
    args = parser.parse_args()
    if args.rooms < args.sites or args.sites < 2:
        parser.error("need at least 2 sites and a Room per site")
    names = [f"site-{n + 1}" for n in range(args.sites)]
    per_site = {
        name: args.rooms // args.sites + (n < args.rooms % args.sites) for n, name in enumerate(names)
    }
    rooms = df.plan(per_site, down=max(1, args.rooms // 40), logged_out=max(1, args.rooms // 40))
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="dashboard-fleet-") as workdir,
        df.running_fleet(Path(workdir), rooms, interval=args.interval, room_timeout="2s") as fleet,
    ):
        print(f"{len(rooms)} Rooms on {args.sites} sites started in {time.monotonic() - started:.1f} s")
        interval = float(args.interval.rstrip("s"))
        df.wait_for_scrapes(fleet, SCRAPES, interval * (SCRAPES + 4) + 30)
        print(f"every Room scraped {SCRAPES} times after {time.monotonic() - started:.0f} s")
        df.run_transfers(fleet, interval * 6 + 30)
        elapsed = time.monotonic() - started
        print(f"the Rooms' transfers made and scraped after {elapsed:.0f} s\n")
        return report(fleet, names, elapsed)


def report(fleet: df.Fleet, sites: list[str], elapsed: float) -> int:
    base = {"job": ".*", "instance": ".*", "exporter": fleet.exporter_url, "module": "default"}
    selections = {
        "All": {**base, "site": ".*"},
        sites[0]: {**base, "site": dq.regex_value(sites[:1])},
        f"{sites[0]}|{sites[1]}": {**base, "site": dq.regex_value(sites[:2])},
    }
    problems = 0
    header = f"{'panel / query':<62} {'limit':>5} " + " ".join(
        f"{name + ' (inst/range)':>24}" for name in selections
    )
    print(header)
    print("-" * len(header))
    slowest = 0.0
    for panel, target in dq.panel_queries(dq.load_dashboard()):
        limit = dq.worst_first_limit(target["expr"])
        cells = []
        for values in selections.values():
            expr = dq.substitute(target["expr"], values)
            began = time.monotonic()
            try:
                instant = fleet.query(expr)
                # an instant-only target (a stat, a bar gauge, a table) is never run over a range by Grafana
                over_range = [] if target.get("instant") else fleet.query_range(expr, min(elapsed, 300), 5)
            except AssertionError as error:
                print(f"FAILED {panel['title']!r} {target['refId']}: {error}")
                problems += 1
                continue
            slowest = max(slowest, time.monotonic() - began)
            rooms_instant = {(s["metric"].get("job"), s["metric"].get("instance")) for s in instant}
            rooms_range = {(s["metric"].get("job"), s["metric"].get("instance")) for s in over_range}
            if (
                limit is not None
                and panel["type"] != "table"
                and max(len(rooms_instant), len(rooms_range)) > limit
            ):
                problems += 1
                cells.append(f"{'OVER ' + str(len(instant)) + '/' + str(len(over_range)):>24}")
            else:
                shown_range = "-" if target.get("instant") else str(len(over_range))
                rooms_shown = f" ({len(rooms_instant)} Rooms)" if limit is not None else ""
                cells.append(f"{str(len(instant)) + rooms_shown:>15}/{shown_range:<8}")
        title = f"{panel['title'][:56]} {target['refId']}"
        print(f"{title:<62} {limit if limit is not None else '-':>5} " + " ".join(cells))
    print(f"\nslowest query pair (instant + range): {slowest * 1000:.0f} ms")
    summary = {
        "Rooms",
        "Rooms answering",
        "Rooms not answering",
        "Rooms needing attention",
        "Failed transfers in the range",
    }
    for panel, target in dq.panel_queries(dq.load_dashboard()):
        if panel["title"] in summary:
            shown = [
                fleet.query(dq.substitute(target["expr"], v))[0]["value"][1] for v in selections.values()
            ]
            print(
                f"{panel['title']:<30} "
                + "  ".join(f"{n}={s}" for n, s in zip(selections, shown, strict=True))
            )
    print("OK" if problems == 0 else f"{problems} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
