"""The dashboard over a fleet across sites, against a real Prometheus: the `site` variable, the summary row,
the worst-first panels, the Room table and the Room links.

Fourteen emulated Rooms on three sites (more than a worst-first panel's ten), one of them down and one not
logged in to its server (so it has no name), behind one real multi-target exporter, scraped by Debian's
Prometheus with prometheus/prometheus.yml's /probe job (tests/dashboard_fleet.py). Once Prometheus has read
every Room, each answering Room sends and receives a few files that arrive or fail, for the transfer counters.
Every panel query runs with the site variable on All, on one site, on several (a regex alternation, as Grafana
writes it), on a site and a Room, and on a site without Rooms.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests import dashboard_fleet as df
from tests import dashboard_queries as dq
from tests.processes import http_get

pytestmark = pytest.mark.e2e

SITES = {"north": 6, "south": 5, "east": 3}
SCRAPES_BEFORE_QUERYING = 3
WAIT_SECONDS = 40
RANGE_SECONDS = 20
TABLE = "Rooms, worst first"


def _alert_threshold(alert: str) -> float:
    [rule] = [rule for rule in dq.load_alert_rules() if rule["alert"] == alert]
    match = re.search(r">=?\s*([\d.]+)\s*$", rule["expr"])
    assert match, rule["expr"]
    return float(match.group(1))


WAITING_LIMIT = _alert_threshold("TrueconfFileRequestWaitingTooLong")
DOWNLOADING_LIMIT = _alert_threshold("TrueconfFileTransferTooLong")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[df.Fleet]:
    rooms = df.plan(SITES, down=1, logged_out=1)
    with df.running_fleet(tmp_path_factory.mktemp("dashboard-sites"), rooms) as running:
        df.wait_for_scrapes(running, SCRAPES_BEFORE_QUERYING, WAIT_SECONDS)
        df.run_transfers(running, WAIT_SECONDS)
        yield running


@dataclass(frozen=True)
class Selection:
    """What the user picks, and the Rooms it selects."""

    values: dict[str, str]
    rooms: dict[str, df.FleetRoom]
    all_sites: bool


def selections(fleet: df.Fleet) -> dict[str, Selection]:
    rooms = fleet.instances
    south = [instance for instance, room in rooms.items() if room.site == "south"]

    def select(site: str, instance: str = ".*") -> dict[str, str]:
        return {
            "job": ".*",
            "site": site,
            "instance": instance,
            "exporter": fleet.exporter_url,
            "module": "x",
        }

    return {
        "All": Selection(select(".*"), rooms, True),
        "one site": Selection(select(dq.regex_value(["north"])), _at(rooms, {"north"}), False),
        "two sites": Selection(
            select(dq.regex_value(["north", "east"])), _at(rooms, {"north", "east"}), False
        ),
        "a site and a Room": Selection(
            select(dq.regex_value(["south"]), dq.regex_value(south[:1])), {south[0]: rooms[south[0]]}, False
        ),
        "a site without Rooms": Selection(select(dq.regex_value(["west"])), {}, False),
    }


def _at(rooms: dict[str, df.FleetRoom], sites: set[str]) -> dict[str, df.FleetRoom]:
    return {instance: room for instance, room in rooms.items() if room.site in sites}


def _queries() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return list(dq.panel_queries(dq.load_dashboard()))


def _where(selection: str, panel: dict[str, Any], target: dict[str, Any]) -> str:
    return f"{selection}: {panel['title']!r} {target['refId']}"


def _rooms_in(series: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(s["metric"].get("job", ""), s["metric"].get("instance", "")) for s in series}


def test_the_fleet_is_what_the_test_says() -> None:
    """The fixture has Rooms past each threshold and under it, and more Rooms than a worst-first panel."""
    rooms = df.plan(SITES, down=1, logged_out=1)
    answering = [room for room in rooms if room.listening]
    assert len(answering) > 10
    assert any(room.waiting_age > WAITING_LIMIT for room in answering)
    assert any(room.waiting_age <= WAITING_LIMIT for room in answering)
    assert any(room.downloading_age > DOWNLOADING_LIMIT for room in answering)
    assert [room.site for room in rooms if not room.logged_in or not room.listening] == ["east", "east"]


def test_every_query_follows_the_site_selection(fleet: df.Fleet) -> None:
    """Every panel query is valid with every selection and returns only the selected Rooms' series (and the
    exporter's own only with all sites); with All, every query returns data."""
    empty = []
    for name, selection in selections(fleet).items():
        selected_sites = {room.site for room in selection.rooms.values()}
        for panel, target in _queries():
            expr = dq.substitute(target["expr"], selection.values)
            result = fleet.query(expr)
            where = _where(name, panel, target)
            if name == "All" and not result:
                empty.append(where)
            for series in result:
                labels = series["metric"]
                if "site" in labels:
                    assert labels["site"] in selected_sites, f"{where}: {labels}"
                if labels.get("job") == df.PROBE_JOB and "instance" in labels:
                    assert labels["instance"] in selection.rooms, f"{where}: {labels}"
                if labels.get("job") == df.EXPORTER_JOB:
                    assert selection.all_sites, f"{where}: the exporter's own series belong to no site"
    assert empty == []


def _number(fleet: df.Fleet, title: str, values: dict[str, str]) -> float:
    [panel] = [p for p in dq.panels(dq.load_dashboard()) if p["title"] == title]
    [target] = panel["targets"]
    [series] = fleet.query(dq.substitute(target["expr"], values))
    return float(series["value"][1])


def test_fleet_summary_counts_the_selected_rooms(fleet: df.Fleet) -> None:
    for name, selection in selections(fleet).items():
        rooms = list(selection.rooms.values())
        wanted = {
            "Rooms": len(rooms),
            "Rooms answering": sum(room.listening for room in rooms),
            "Rooms not answering": sum(not room.listening for room in rooms),
            "Rooms needing attention": sum(
                room.needs_attention(WAITING_LIMIT, DOWNLOADING_LIMIT) for room in rooms
            ),
        }
        shown = {title: _number(fleet, title, selection.values) for title in wanted}
        assert shown == wanted, name
    everything = selections(fleet)["All"]
    assert 0 < _number(fleet, "Rooms needing attention", everything.values) < len(everything.rooms)


def test_worst_first_panels_draw_at_most_their_limit(fleet: df.Fleet) -> None:
    """With more Rooms than the limit, an instant and a range query both show exactly `limit` Rooms where
    more Rooms than that have the value (a panel drawing every Room would show 13)."""
    everything = selections(fleet)["All"]
    full = []
    for panel, target in _queries():
        limit = dq.worst_first_limit(target["expr"])
        if limit is None or panel["type"] == "table":
            continue
        expr = dq.substitute(target["expr"], everything.values)
        instant = _rooms_in(fleet.query(expr))
        # an instant-only target (a bar gauge) is never run over a range by Grafana
        over_range = set() if target.get("instant") else _rooms_in(fleet.query_range(expr, RANGE_SECONDS, 1))
        where = _where("All", panel, target)
        assert len(instant) <= limit and len(over_range) <= limit, (where, len(instant), len(over_range))
        if len(instant) == limit:
            full.append(panel["title"])
    for title in (
        "Oldest request waiting for the recipient: worst 10 Rooms",
        "Oldest download in progress: worst 10 Rooms",
        "Slowest scrapes: worst 10 Rooms",
        "Room reachability: the 10 Rooms that answered least",
        "Failed transfers in the last 15 minutes: worst 10 Rooms",
        "Share of transfers that failed per hour: worst 10 Rooms",
        "Most failed transfers in the range: worst 10 Rooms",
    ):
        assert title in full, (title, full)


def test_the_worst_come_first(fleet: df.Fleet) -> None:
    """The oldest-waiting panel picks the Rooms whose requests are oldest; the bar gauge of failures lists
    the Rooms with the most, most first."""
    everything = selections(fleet)["All"]
    panels = {p["title"]: p for p in dq.panels(dq.load_dashboard())}
    waiting = panels["Oldest request waiting for the recipient: worst 10 Rooms"]["targets"][0]
    shown = {
        instance for _, instance in _rooms_in(fleet.query(dq.substitute(waiting["expr"], everything.values)))
    }
    answering = {i: room for i, room in fleet.instances.items() if room.listening}
    oldest = sorted(answering, key=lambda i: answering[i].waiting_age, reverse=True)
    ages = sorted((answering[i].waiting_age for i in oldest), reverse=True)
    cutoff = ages[len(shown) - 1]
    assert {i for i in oldest if answering[i].waiting_age > cutoff} <= shown
    assert all(answering[i].waiting_age >= cutoff for i in shown)
    failed = panels["Most failed requests listed now: worst 10 Rooms"]["targets"][0]
    values = [float(s["value"][1]) for s in fleet.query(dq.substitute(failed["expr"], everything.values))]
    assert values and values == sorted(values, reverse=True) and len(values) <= 10


EXTRAPOLATED = 1.25
"""increase() extrapolates a Room's count to the end of the window by up to a scrape interval: with the
fixture's 7 or more scrapes of each Room, at most 1.1/6 more than counted."""


def _about(shown: float, counted: float) -> bool:
    """Whether `shown` is Prometheus's increase() of `counted` (0 exactly for nothing)."""
    return counted <= shown <= counted * EXTRAPOLATED


def _shares(failed: int, processed: int) -> float:
    return failed / (failed + processed) if failed + processed else math.nan


def test_the_fleet_transfers_are_what_the_test_says() -> None:
    """Rooms with two failures, with one, with none; every answering Room has a processed transfer out."""
    answering = [room for room in df.plan(SITES, down=1, logged_out=1) if room.listening]
    assert {room.transfers_out[1] for room in answering} == {0, 1, 2}
    assert all(room.transfers_out[0] > 0 for room in answering)
    assert {room.transfers_in[1] for room in answering} == {0, 1}


def test_finished_transfers_are_counted(fleet: df.Fleet) -> None:
    """The transfers the Rooms made, as the counters' panels show them: the failures of the selected Rooms
    in the summary, each site's in the table, each Room's share that failed, and the Rooms with the most
    failures first in the bar gauge."""
    for name, selection in selections(fleet).items():
        rooms = selection.rooms.values()
        failed = sum(room.transfers_out[1] + room.transfers_in[1] for room in rooms)
        shown = _number(fleet, "Failed transfers in the range", selection.values)
        assert _about(shown, failed), (name, shown, failed)
    everything = selections(fleet)["All"]
    panels = {p["title"]: p for p in dq.panels(dq.load_dashboard())}

    def run(title: str, ref: str) -> list[dict[str, Any]]:
        [target] = [t for t in panels[title]["targets"] if t["refId"] == ref]
        return fleet.query(dq.substitute(target["expr"], everything.values))

    per_site = "Transfers per site in the range"
    for ref, direction, column in (("A", "out", 0), ("B", "out", 1), ("D", "in", 0), ("E", "in", 1)):
        by_site = {s["metric"]["site"]: float(s["value"][1]) for s in run(per_site, ref)}
        assert set(by_site) == set(SITES), (ref, by_site)
        for site, value in by_site.items():
            at_site = [room for room in fleet.instances.values() if room.site == site]
            counted = sum(getattr(room, f"transfers_{direction}")[column] for room in at_site)
            assert _about(value, counted), (per_site, ref, site, value, counted)
    room_shares = "Share of transfers that failed per hour: worst 10 Rooms"
    for ref, direction in (("A", "out"), ("B", "in")):
        series = run(room_shares, ref)
        assert len(series) == 10, (ref, series)
        for s in series:
            room = fleet.instances[s["metric"]["instance"]]
            processed, failed = getattr(room, f"transfers_{direction}")
            wanted, value = _shares(failed, processed), float(s["value"][1])
            assert (math.isnan(wanted) and math.isnan(value)) or math.isclose(value, wanted), (ref, room, s)
    bars = run("Most failed transfers in the range: worst 10 Rooms", "A")
    values = [float(s["value"][1]) for s in bars]
    assert len(values) == 10 and values == sorted(values, reverse=True), values
    shown_rooms = {s["metric"]["instance"]: float(s["value"][1]) for s in bars}
    most = max(room.transfers_out[1] for room in fleet.instances.values())
    assert {i for i, room in fleet.instances.items() if room.transfers_out[1] == most} <= set(shown_rooms)
    for instance, value in shown_rooms.items():
        assert _about(value, fleet.instances[instance].transfers_out[1]), (instance, value)


def _merged_table(fleet: df.Fleet, values: dict[str, str]) -> dict[tuple[str, str, str], dict[str, str]]:
    """The Room table as Grafana's merge transformation builds it: one row per (job, instance, site), each
    query's labels and value (`Value #<refId>`) in it."""
    [panel] = [p for p in dq.panels(dq.load_dashboard()) if p["title"] == TABLE]
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    for target in panel["targets"]:
        for series in fleet.query(dq.substitute(target["expr"], values)):
            labels = series["metric"]
            key = (labels.get("job", ""), labels.get("instance", ""), labels.get("site", ""))
            row = rows.setdefault(key, {})
            row.update({k: v for k, v in labels.items() if k != "__name__"})
            row[f"Value #{target['refId']}"] = series["value"][1]
    return rows


def test_room_table_one_row_per_room_named_where_known(fleet: df.Fleet) -> None:
    """A row per selected Room, with its problems, failed count, version, availability and name; the Room
    that is not logged in (no name reported) and the one that is down keep their rows, without a name."""
    for name, selection in selections(fleet).items():
        rows = _merged_table(fleet, selection.values)
        assert {instance for _, instance, _ in rows} == set(selection.rooms), name
        for (_, instance, site), row in rows.items():
            room = selection.rooms[instance]
            assert site == room.site
            problems = float(row["Value #A"])
            assert (problems > 0) == room.needs_attention(WAITING_LIMIT, DOWNLOADING_LIMIT), (name, room, row)
            assert float(row["Value #B"]) == (1 if room.listening else 0), (name, room, row)
            if room.listening and room.logged_in:
                assert row.get("name") == room.name, (
                    f"{name}: {room} has no name (is trueconf_room_identity_info exposed?): {row}"
                )
            else:
                assert "name" not in row, (name, room, row)
            if room.listening:
                assert float(row["Value #C"]) == room.listed_failed, (name, room, row)
                assert row.get("version") and row.get("app_state"), (name, room, row)
                assert row.get("availability") == ("available" if room.logged_in else "server_login_required")


def test_room_links_open_the_exporter_pages(fleet: df.Fleet) -> None:
    """The table's links, built as Grafana builds them, open the Room's debug probe, its recent results and
    the status page on the real exporter, for a Room that answers and for one that is down."""
    [panel] = [p for p in dq.panels(dq.load_dashboard()) if p["title"] == TABLE]
    links = dq.data_links(panel)
    assert len(links) >= 3
    variables = {"exporter": fleet.exporter_url, "module": "default"}
    down = next(i for i, room in fleet.instances.items() if not room.listening)
    up = next(i for i, room in fleet.instances.items() if room.listening and room.logged_in)
    for instance in (up, down):
        for link in links:
            url = dq.link_url(link["url"], variables, instance)
            status, _, body = http_get(url)
            text = body.decode("utf-8", "replace")
            assert status == 200, (link["title"], url, status, text[:500])
            if "debug=true" in url:
                assert "trueconf_up" in text, (url, text[:500])
            path = urllib.parse.urlsplit(url).path
            if path in ("/", "/room"):
                assert instance in text, (link["title"], url)
