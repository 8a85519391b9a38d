"""The Grafana dashboard and its provisioning files follow the project's dashboard conventions.

Each check fails with the panel (or variable) at fault. The metric names the queries may use come from a real
exporter scraped against the emulator, never from a list written here.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import dashboard_queries as dq
from tests.processes import Process
from tests.test_alert_rules import promtool

pytestmark = pytest.mark.e2e

PROVISIONING = dq.ROOT / "grafana" / "provisioning"
DASHBOARD_UID = "trueconf-file-transfers"
SCHEMA_VERSION = 39
"""Pinned: Grafana migrates an older schema on load, and a newer one may not load in older Grafanas."""
ROWS = ["Fleet summary", "Fleet health", "Finished transfers", "Transfers", "The exporter"]
ROOM_TABLE = "Rooms, worst first"
MOST_LINES = 10
"""A panel with a line (or bar) per Room draws at most this many Rooms, the worst ones."""

REQUIRED_METRICS = {
    "trueconf_up": "which Rooms answer",
    "trueconf_scrape_error": "why a Room does not answer",
    "trueconf_outgoing_file_requests": "requests by status, pending by destination, failed requests",
    "trueconf_outgoing_file_requests_oldest_pending_age_seconds": "oldest pending age",
    "trueconf_outgoing_file_requests_size_bytes": "bytes waiting and in transfer",
    "trueconf_scrape_duration_seconds": "scrape duration",
    "trueconf_outgoing_file_requests_malformed": "malformed entries",
    "trueconf_file_transfer_availability": "whether each Room may transfer files",
    "trueconf_room_app_state": "each Room's app state",
    "trueconf_incoming_file_requests": "incoming requests by status and source",
    "trueconf_incoming_file_requests_oldest_pending_age_seconds": "oldest pending incoming request",
    "trueconf_room_info": "a table of Room versions",
    "trueconf_exporter_room_logins_total": "logins per Room or exporter",
    "trueconf_exporter_room_sessions": "open Room sessions",
    "trueconf_room_identity_info": "the Rooms' names in the Room table",
    "trueconf_outgoing_file_requests_finished_total": "outgoing transfers per hour by status, failed share",
    "trueconf_incoming_file_requests_finished_total": "incoming transfers per hour by status, failed share",
    "trueconf_outgoing_file_requests_created_total": "outgoing requests created per hour",
    "trueconf_incoming_file_requests_created_total": "incoming requests created per hour",
    "trueconf_outgoing_file_requests_processed_bytes_total": "outgoing bytes delivered per hour",
    "trueconf_incoming_file_requests_processed_bytes_total": "incoming bytes delivered per hour",
}
"""What the dashboard shows at least (metric -> what for)."""


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dq.load_dashboard()


@pytest.fixture
def exposed_names(processes: dict[str, Callable[..., Process]], tmp_path: Path) -> set[str]:
    return dq.exposed_metric_names(processes, tmp_path)


def _label(panel: dict[str, Any]) -> str:
    return f"panel {panel.get('id')} {panel.get('title')!r}"


def test_the_promql_scanner_finds_metric_names_and_only_them() -> None:
    expr = (
        'sum by (job, instance) (rate(foo_total{a="}", b=~"$x"}[5m] offset 1h)) '
        "/ on (instance) group_left (x) "
        'bar > 1e3 and count without (le) (baz) or {__name__=~"q.*"} unless max(quux) by (job)'
    )
    assert dq.metric_names(expr) == {"foo_total", "bar", "baz", "<__name__>", "quux"}
    assert dq.selectors(expr)[0].matchers == '{a="}", b=~"$x"}'
    assert dq.selectors('x{ job=~"$job" ,instance=~"$instance"}')[0].has_matcher(dq.INSTANCE_MATCHER)
    assert not dq.selectors('x{job="$job"}')[0].has_matcher(dq.JOB_MATCHER)


def test_substitution_of_grafana_variables() -> None:
    expr = 'x{instance=~"$instance", job=~"${job}"}[$__range] [[job]] $__rate_interval'
    values = {"instance": dq.regex_value(["127.0.0.1:9", "b"]), "job": "j"}
    assert dq.substitute(expr, values) == r'x{instance=~"(127\\.0\\.0\\.1:9|b)", job=~"j"}[1h] j 1m'
    with pytest.raises(KeyError):
        dq.substitute('x{a=~"$unknown"}', values)


def test_fixed_uid_and_no_import_placeholders(dashboard: dict[str, Any]) -> None:
    assert dashboard.get("uid") == DASHBOARD_UID
    assert "__inputs" not in dashboard, "__inputs breaks file provisioning"
    assert dashboard.get("id") is None, "a fixed id clashes between Grafana instances: use the uid"
    text = dq.DASHBOARD.read_text(encoding="utf-8")
    assert "${DS_" not in text, "a datasource placeholder of an exported dashboard: use ${datasource}"
    assert dashboard.get("title")
    assert dashboard.get("schemaVersion") == SCHEMA_VERSION


def _demo_exporter_url() -> str:
    """The exporter of prometheus/prometheus.yml's demo as a browser reaches it: its /probe job's target."""
    config = yaml.safe_load(dq.PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    [probe] = [job for job in config["scrape_configs"] if job.get("metrics_path") == "/probe"]
    [address] = [
        rule["replacement"] for rule in probe["relabel_configs"] if rule["target_label"] == "__address__"
    ]
    return f"http://{address}"


def test_no_hard_coded_hosts(dashboard: dict[str, Any]) -> None:
    """No host anywhere but the default of the `exporter` variable, which is the demo's exporter."""
    without_default = {
        **dashboard,
        "templating": {"list": [v for v in dashboard["templating"]["list"] if v["name"] != "exporter"]},
    }
    text = json.dumps(without_default)
    hosts = re.findall(
        r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\blocalhost\b|https?://[^\s\"]+|\b[\w-]+\.(?:com|org|net|local)\b", text
    )
    assert hosts == []
    for panel, target in dq.panel_queries(dashboard):
        for selector in dq.selectors(target["expr"]):
            for matcher in dq.matcher_list(selector.matchers):
                if matcher.startswith(("job", "instance", "site")):
                    assert matcher in dq.ROOM_MATCHERS, f"{_label(panel)}: {matcher}"
    exporter = dq.variables(dashboard)["exporter"]
    default = _demo_exporter_url()
    assert exporter["query"] == exporter["current"]["value"] == default
    assert [o["value"] for o in exporter["options"]] == [default]


def test_datasource_variable_used_by_every_panel_and_variable(dashboard: dict[str, Any]) -> None:
    variables = dq.variables(dashboard)
    datasource = variables.get("datasource")
    assert datasource is not None and datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    for name, variable in variables.items():
        if variable["type"] == "query":
            assert variable.get("datasource") == dq.DATASOURCE_REF, f"variable {name}"
    panels = list(dq.panels(dashboard))
    assert panels
    for panel in panels:
        assert panel.get("datasource") == dq.DATASOURCE_REF, _label(panel)
        assert panel.get("targets"), f"{_label(panel)} has no query"
        for target in panel["targets"]:
            assert target.get("datasource") == dq.DATASOURCE_REF, (
                f"{_label(panel)} query {target.get('refId')}"
            )


def test_job_site_and_instance_variables(dashboard: dict[str, Any]) -> None:
    variables = dq.variables(dashboard)
    names_in_order = [v["name"] for v in dashboard["templating"]["list"]]
    assert names_in_order == ["datasource", "job", "site", "instance", *dq.LINK_VARIABLES]
    for name in ("job", "site", "instance"):
        variable = variables[name]
        assert variable["type"] == "query", name
        assert variable.get("multi") is True, name
        assert variable.get("includeAll") is True, name
        # All is `.*`, not the list of values: it also matches Rooms without the label (no site set)
        assert variable.get("allValue") == ".*", name
        query = dq.variable_query(variable)
        assert query.label == name
        assert query.expr is not None
    site_query = dq.variable_query(variables["site"])
    assert all(s.has_matcher(dq.JOB_MATCHER) for s in dq.selectors(site_query.expr or "")), (
        "the site variable must follow the job selection"
    )
    instance_query = dq.variable_query(variables["instance"])
    for matcher in (dq.JOB_MATCHER, dq.SITE_MATCHER):
        assert all(s.has_matcher(matcher) for s in dq.selectors(instance_query.expr or "")), (
            f"the instance variable must follow the selection ({matcher})"
        )
    for name in dq.LINK_VARIABLES:
        variable = variables[name]
        assert variable["type"] == "textbox", name
        assert variable["query"] and variable["current"]["value"] == variable["query"], name
        assert variable.get("description"), name


def test_every_query_filtered_by_job_site_and_instance(dashboard: dict[str, Any]) -> None:
    queries = list(dq.panel_queries(dashboard))
    assert len(queries) >= 10
    for panel, target in queries:
        found = dq.selectors(target["expr"])
        assert found, f"{_label(panel)}: no selector in {target['expr']!r}"
        for selector in found:
            assert selector.metric is not None, f"{_label(panel)}: a selector without a metric name"
            for matcher in dq.ROOM_MATCHERS:
                assert selector.has_matcher(matcher), f"{_label(panel)}: {selector} lacks {matcher}"


def test_unit_and_description_on_every_panel(dashboard: dict[str, Any]) -> None:
    for panel in dq.panels(dashboard):
        assert panel.get("description", "").strip(), f"{_label(panel)} has no description"
        assert panel.get("fieldConfig", {}).get("defaults", {}).get("unit"), f"{_label(panel)} has no unit"


def test_panel_ids_unique_and_layout_in_rows(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in [*dq.rows(dashboard), *dq.panels(dashboard)]]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert duplicates == []
    assert len(ids) == len(dashboard["panels"]) + sum(len(r.get("panels", [])) for r in dq.rows(dashboard))
    assert [row["title"] for row in dq.rows(dashboard)] == ROWS
    # top to bottom: a row's panels sit below it and above the next row
    tops = [panel["gridPos"]["y"] for panel in dashboard["panels"]]
    assert tops == sorted(tops)
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, _label(panel)


def test_shows_what_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    used = {name for _, target in dq.panel_queries(dashboard) for name in dq.metric_names(target["expr"])}
    missing = {name: why for name, why in REQUIRED_METRICS.items() if name not in used}
    assert not missing
    kinds = {panel["type"] for panel in dq.panels(dashboard)}
    assert {"timeseries", "table", "stat"} <= kinds
    stacked = [
        panel
        for panel in dq.panels(dashboard)
        if panel["fieldConfig"]["defaults"].get("custom", {}).get("stacking", {}).get("mode") == "normal"
        and any("by (status)" in t["expr"] for t in panel["targets"])
    ]
    assert stacked, "requests by status over time must be stacked"
    versions = [
        panel
        for panel in dq.panels(dashboard)
        if panel["type"] == "table" and _reads(panel, "trueconf_room_info")
    ]
    assert versions, "a table of Room versions"
    timelines = {
        name
        for panel in dq.panels(dashboard)
        if panel["type"] == "state-timeline"
        for target in panel["targets"]
        for name in dq.metric_names(target["expr"])
    }
    assert {"trueconf_file_transfer_availability", "trueconf_room_app_state"} <= timelines


FINISHED_COUNTERS = {
    "outgoing": "trueconf_outgoing_file_requests_finished_total",
    "incoming": "trueconf_incoming_file_requests_finished_total",
}
"""Each direction's counter of finished requests (`status` processed or failed)."""


def _reads(panel: dict[str, Any], metric: str) -> bool:
    return any(metric in dq.metric_names(target["expr"]) for target in panel["targets"])


def _row_panels(dashboard: dict[str, Any], title: str) -> list[dict[str, Any]]:
    """The panels under the row `title` (an open row's panels follow it up to the next row)."""
    found: list[dict[str, Any]] = []
    current = None
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            found += panel.get("panels", []) if current == title else []
        elif current == title:
            found.append(panel)
    return found


def _alert_selectors() -> dict[str, list[dq.Selector]]:
    return {rule["alert"]: dq.selectors(rule["expr"]) for rule in dq.load_alert_rules()}


def test_fleet_summary_row(dashboard: dict[str, Any]) -> None:
    """Rooms, answering, needing attention (every Room-level alert's condition), failures in the range: one
    number each, at the top."""
    summary = {panel["title"]: panel for panel in _row_panels(dashboard, "Fleet summary")}
    wanted = ["Rooms", "Rooms answering", "Rooms needing attention", "Failed transfers in the range"]
    assert set(wanted) <= set(summary), sorted(summary)
    for title in wanted:
        panel = summary[title]
        assert panel["type"] == "stat", title
        [target] = panel["targets"]
        assert target.get("instant") is True, f"{title}: a number for now, not a range"
        # a selection without any Room shows 0, not "No data"
        assert target["expr"].rstrip().endswith("or vector(0)"), title
    assert re.search(r"^count\(trueconf_up\{[^}]*\} == 1\)", summary["Rooms answering"]["targets"][0]["expr"])
    attention = summary["Rooms needing attention"]["targets"][0]["expr"]
    conditions = {
        "TrueconfRoomDown": r"trueconf_up\{[^}]*\} == 0",
        "TrueconfFileRequestWaitingTooLong": r'_age_seconds\{status="waiting"[^}]*\} > \d',
        "TrueconfFileTransferTooLong": r'_age_seconds\{status="downloading"[^}]*\} > \d',
        "TrueconfFileTransferUnavailable": r'availability\{state="available"[^}]*\} == 0',
        "TrueconfMalformedEntries": r"malformed\{[^}]*\} >= \d",
    }
    assert set(conditions) <= set(_alert_selectors())
    missing = [alert for alert, pattern in conditions.items() if not re.search(pattern, attention)]
    assert missing == [], attention
    # failures: counted by the finished counters of both directions, over the range
    failures = summary["Failed transfers in the range"]["targets"][0]["expr"]
    for counter in FINISHED_COUNTERS.values():
        assert re.search(rf'increase\({counter}\{{status="failed"[^}}]*\}}\[\$__range\]\)', failures), counter
    assert dq.metric_names(failures) == set(FINISHED_COUNTERS.values()), "no gauge of what the Room lists"


SHARE = re.compile(
    r"sum by \((?P<by>[^)]*)\) \(increase\((?P<metric>\w+)\{status=\"failed\", (?P<m>[^}]*)\}"
    r"\[(?P<window>[^\]]+)\]\)\) / sum by \((?P=by)\) \(increase\((?P=metric)\{(?P=m)\}\[(?P=window)\]\)\)"
)
"""A share that failed: a counter's failed over all it counted finished, same grouping, Rooms and window."""


def test_finished_transfers_row(dashboard: dict[str, Any]) -> None:
    """The counters' row, each panel for both directions: transfers per hour by status (and created), the
    share that failed per site over time, a table per site for the range, bytes per hour, and the worst
    Rooms first: the alert's 15-minute count, the share per hour, the most failures in the range."""
    row = {panel["title"]: panel for panel in _row_panels(dashboard, "Finished transfers")}

    def exprs(title: str) -> list[str]:
        return [target["expr"] for target in row[title]["targets"]]

    def both_directions(title: str, counters: tuple[str, ...] = tuple(FINISHED_COUNTERS.values())) -> None:
        read = [dq.metric_names(expr) for expr in exprs(title)]
        for counter in counters:
            assert {counter} in read, (title, counter, read)

    per_hour = exprs("Transfers per hour, by status")
    both_directions("Transfers per hour, by status")
    for counter in FINISHED_COUNTERS.values():
        assert f"sum by (status) (increase({counter}{{{', '.join(dq.ROOM_MATCHERS)}}}[1h]))" in per_hour
    both_directions(
        "Transfers per hour, by status",
        ("trueconf_outgoing_file_requests_created_total", "trueconf_incoming_file_requests_created_total"),
    )
    both_directions(
        "Bytes transferred per hour",
        (
            "trueconf_outgoing_file_requests_processed_bytes_total",
            "trueconf_incoming_file_requests_processed_bytes_total",
        ),
    )
    shares = {
        title: [SHARE.search(expr) for expr in exprs(title)]
        for title in (
            "Share of transfers that failed per hour, by site",
            "Share of transfers that failed per hour: worst 10 Rooms",
        )
    }
    for title, found in shares.items():
        both_directions(title)
        assert all(found), (title, exprs(title))
        assert {(m["by"], m["window"]) for m in found if m} == {
            ("site" if "by site" in title else "job, instance", "1h")
        }, title
        assert row[title]["fieldConfig"]["defaults"]["unit"] == "percentunit", title
    table = row["Transfers per site in the range"]
    assert table["type"] == "table" and table["transformations"][0]["id"] == "merge"
    assert all(t.get("format") == "table" and t.get("instant") is True for t in table["targets"])
    assert all(
        "sum by (site) (increase(" in t["expr"] and "[$__range]" in t["expr"] for t in table["targets"]
    )
    both_directions("Transfers per site in the range")
    assert sum(bool(SHARE.search(expr)) for expr in exprs("Transfers per site in the range")) == 2
    [organize] = [t for t in table["transformations"] if t["id"] == "organize"]
    assert set(organize["options"]["renameByName"].values()) == {
        "Site",
        *(f"{d} {c}" for d in ("Outgoing", "Incoming") for c in ("processed", "failed", "failed share")),
    }
    for title in (
        "Failed transfers in the last 15 minutes: worst 10 Rooms",
        "Share of transfers that failed per hour: worst 10 Rooms",
        "Most failed transfers in the range: worst 10 Rooms",
    ):
        both_directions(title)
        assert all(re.search(r"\btopk\(10,", expr) for expr in exprs(title)), title
        assert row[title] in _room_panels(dashboard), f"{title}: a line or bar per Room"
    alert_window = exprs("Failed transfers in the last 15 minutes: worst 10 Rooms")
    for counter in FINISHED_COUNTERS.values():
        assert any(f'increase({counter}{{status="failed", ' in e and "[15m])" in e for e in alert_window)


OUT_FINISHED, IN_FINISHED = FINISHED_COUNTERS["outgoing"], FINISHED_COUNTERS["incoming"]
ROOM_A = 'job="trueconf-probe", instance="room-a:8765", site="north"'
ROOM_B = 'job="trueconf-probe", instance="room-b:8765", site="north"'
ROOM_C = 'job="trueconf-probe", instance="room-c:8765", site="south"'
ROOM_D = 'job="trueconf", instance="room-d:18765"'
KNOWN_SERIES = [
    # Room a: 2 outgoing failures (minutes 10 and 20) and 60 processed; 4 incoming processed at minute 30.
    (OUT_FINISHED, ROOM_A, 'status="failed", destination="peer"', "0x9 1x9 2x41"),
    (OUT_FINISHED, ROOM_A, 'status="processed", destination="peer"', "0+1x60"),
    (OUT_FINISHED, ROOM_A, 'status="failed", destination="conference"', "0x60"),
    (OUT_FINISHED, ROOM_A, 'status="processed", destination="conference"', "0x60"),
    (IN_FINISHED, ROOM_A, 'status="failed", source="peer"', "0x60"),
    (IN_FINISHED, ROOM_A, 'status="processed", source="peer"', "0x29 4x31"),
    ("trueconf_outgoing_file_requests_created_total", ROOM_A, 'destination="peer"', "0+1x60"),
    ("trueconf_outgoing_file_requests_created_total", ROOM_A, 'destination="conference"', "0x60"),
    ("trueconf_incoming_file_requests_created_total", ROOM_A, 'source="peer"', "0x29 4x31"),
    ("trueconf_outgoing_file_requests_processed_bytes_total", ROOM_A, 'destination="peer"', "0+1000x60"),
    ("trueconf_incoming_file_requests_processed_bytes_total", ROOM_A, 'source="peer"', "0x29 4096x31"),
    # Room b: its exporter restarts at minute 30 (a scrape lost, the counters back at 0): one outgoing failure
    # before, one after; 29 processed before, 29 after; 2 incoming processed after.
    (OUT_FINISHED, ROOM_B, 'status="failed", destination="peer"', "0x9 1x19 stale 0x9 1x20"),
    (OUT_FINISHED, ROOM_B, 'status="processed", destination="peer"', "0+1x29 stale 0+1x30"),
    (IN_FINISHED, ROOM_B, 'status="failed", source="peer"', "0x29 stale 0x30"),
    (IN_FINISHED, ROOM_B, 'status="processed", source="peer"', "0x29 stale 0x19 2x10"),
    # Room c: 120 outgoing processed; 1 incoming failure (minute 50) and 3 processed.
    (OUT_FINISHED, ROOM_C, 'status="failed", destination="conference"', "0x60"),
    (OUT_FINISHED, ROOM_C, 'status="processed", destination="conference"', "0+2x60"),
    (IN_FINISHED, ROOM_C, 'status="failed", source="peer"', "0x49 1x11"),
    (IN_FINISHED, ROOM_C, 'status="processed", source="peer"', "0x19 3x41"),
    # Room d: no site, no incoming collector; 3 outgoing failures in its last 6 minutes, nothing processed.
    (OUT_FINISHED, ROOM_D, 'status="failed", destination="peer"', "0x54 1x2 3x3"),
    (OUT_FINISHED, ROOM_D, 'status="processed", destination="peer"', "0x60"),
]
"""Four Rooms' counters over an hour, a sample a minute: what the counter panels are checked against."""
NORTH, SOUTH, NO_SITE = '{site="north"}', '{site="south"}', "{}"
A, B, C, D = (f"{{{room.rsplit(', site=', 1)[0]}}}" for room in (ROOM_A, ROOM_B, ROOM_C, ROOM_D))
COUNTED_AT_THE_HOUR: dict[tuple[str, str], dict[str, float]] = {
    ("Failed transfers in the range", "A"): {NO_SITE: 2 + 2 + 3 + 1},
    ("Transfers per hour, by status", "A"): {'{status="failed"}': 7, '{status="processed"}': 60 + 58 + 120},
    ("Transfers per hour, by status", "B"): {'{status="failed"}': 1, '{status="processed"}': 4 + 2 + 3},
    ("Transfers per hour, by status", "C"): {NO_SITE: 60},
    ("Transfers per hour, by status", "D"): {NO_SITE: 4},
    ("Share of transfers that failed per hour, by site", "A"): {NORTH: 4 / 122, SOUTH: 0, NO_SITE: 1},
    ("Share of transfers that failed per hour, by site", "B"): {NORTH: 0, SOUTH: 1 / 4},
    ("Transfers per site in the range", "A"): {NORTH: 118, SOUTH: 120, NO_SITE: 0},
    ("Transfers per site in the range", "B"): {NORTH: 4, SOUTH: 0, NO_SITE: 3},
    ("Transfers per site in the range", "C"): {NORTH: 4 / 122, SOUTH: 0, NO_SITE: 1},
    ("Transfers per site in the range", "D"): {NORTH: 6, SOUTH: 3},
    ("Transfers per site in the range", "E"): {NORTH: 0, SOUTH: 1},
    ("Transfers per site in the range", "F"): {NORTH: 0, SOUTH: 1 / 4},
    ("Bytes transferred per hour", "A"): {NO_SITE: 60_000},
    ("Bytes transferred per hour", "B"): {NO_SITE: 4096},
    ("Failed transfers in the last 15 minutes: worst 10 Rooms", "A"): {A: 0, B: 0, C: 0, D: 3},
    ("Failed transfers in the last 15 minutes: worst 10 Rooms", "B"): {A: 0, B: 0, C: 1},
    ("Share of transfers that failed per hour: worst 10 Rooms", "A"): {A: 2 / 62, B: 2 / 60, C: 0, D: 1},
    ("Share of transfers that failed per hour: worst 10 Rooms", "B"): {A: 0, B: 0, C: 1 / 4},
    ("Most failed transfers in the range: worst 10 Rooms", "A"): {A: 2, B: 2, C: 0, D: 3},
    ("Most failed transfers in the range: worst 10 Rooms", "B"): {A: 0, B: 0, C: 1},
}
"""What each counter query shows at minute 60 with everything selected (`$__range` 1h): Room b's restart is a
counter reset, not a fall, and not a failure."""
TRANSFER_COUNTERS = {series[0] for series in KNOWN_SERIES}


def test_counter_queries_count_known_series(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Every query of the six counters, run by promtool on KNOWN_SERIES (windows aligned to the samples, so
    increase() has nothing to extrapolate), gives COUNTED_AT_THE_HOUR: resets read as resets, shares of the
    same direction and window, per site, per Room worst first."""
    everything = {"job": ".*", "site": ".*", "instance": ".*"}
    counted = {
        (panel["title"], target["refId"]): dq.substitute(target["expr"], everything)
        for panel, target in dq.panel_queries(dashboard)
        if dq.metric_names(target["expr"]) & TRANSFER_COUNTERS
    }
    assert set(counted) == set(COUNTED_AT_THE_HOUR), "a counter query without an expected result"
    document = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"{metric}{{{room}, {labels}}}", "values": values}
                    for metric, room, labels, values in KNOWN_SERIES
                ],
                "promql_expr_test": [
                    {
                        "expr": counted[key],
                        "eval_time": "60m",
                        "exp_samples": [
                            {"labels": labels, "value": value} for labels, value in wanted.items()
                        ],
                    }
                    for key, wanted in COUNTED_AT_THE_HOUR.items()
                ],
            }
        ],
    }
    test_file = tmp_path / "dashboard_counters_test.yml"
    test_file.write_text(yaml.safe_dump(document, sort_keys=False))
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def _per_room(target: dict[str, Any]) -> bool:
    """Whether a query draws a series per Room (grouped by instance, or named by it)."""
    return bool(re.search(r"\bby \([^)]*\binstance\b", target["expr"])) or "{{instance}}" in target.get(
        "legendFormat", ""
    )


def _exporters_own(target: dict[str, Any]) -> bool:
    """Whether a query reads only the exporter's own metrics (one series per exporter, not per Room)."""
    return all(name.startswith("trueconf_exporter_") for name in dq.metric_names(target["expr"]))


def _room_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Panels that draw a line, bar or row per Room."""
    return [
        panel
        for panel in dq.panels(dashboard)
        if panel["type"] != "stat" and any(_per_room(t) and not _exporters_own(t) for t in panel["targets"])
    ]


def test_worst_first_panels_draw_at_most_a_few_rooms(dashboard: dict[str, Any]) -> None:
    """With 200 Rooms a line per Room is unreadable: a graph, timeline or bar gauge per Room shows the worst
    few (topk/bottomk), chosen once for the whole range (`@ end()`), so a range query has no more Rooms than
    an instant one; a bar gauge sorts them, most first."""
    room_panels = [panel for panel in _room_panels(dashboard) if panel["type"] != "table"]
    assert len(room_panels) >= 8, [p["title"] for p in room_panels]
    for panel in room_panels:
        for target in panel["targets"]:
            if not _per_room(target):
                continue
            limit = dq.worst_first_limit(target["expr"])
            assert limit is not None and limit <= MOST_LINES, f"{_label(panel)}: {target['expr']}"
            if not target.get("instant"):
                assert "[$__range] @ end()" in target["expr"], f"{_label(panel)}: Rooms chosen per step"
            if panel["type"] == "bargauge":
                assert target["expr"].startswith("sort_desc("), _label(panel)
    topk_titles = {
        panel["title"]
        for panel in room_panels
        for target in panel["targets"]
        if re.search(r"\btopk\(", target["expr"])
    }
    for metric in (
        "trueconf_outgoing_file_requests_oldest_pending_age_seconds",
        "trueconf_scrape_duration_seconds",
        "trueconf_outgoing_file_requests",
    ):
        assert any(
            metric in dq.metric_names(t["expr"]) and re.search(r"\btopk\(", t["expr"])
            for panel in room_panels
            for t in panel["targets"]
        ), f"no worst-first panel of {metric}: {sorted(topk_titles)}"


def test_room_table(dashboard: dict[str, Any]) -> None:
    """One row per Room with its problems, failed, oldest ages, availability, app state, version and name;
    the name a query of its own merged by Room, so a Room with no name yet keeps its row."""
    [table] = [panel for panel in dq.panels(dashboard) if panel["title"] == ROOM_TABLE]
    assert table["type"] == "table"
    assert all(t.get("format") == "table" and t.get("instant") is True for t in table["targets"])
    by_metric: dict[str, list[str]] = {}
    for target in table["targets"]:
        for selector in dq.selectors(target["expr"]):
            by_metric.setdefault(selector.metric or "", []).append(target["expr"])
    for metric in (
        "trueconf_up",
        "trueconf_outgoing_file_requests",
        "trueconf_outgoing_file_requests_oldest_pending_age_seconds",
        "trueconf_file_transfer_availability",
        "trueconf_room_app_state",
        "trueconf_room_info",
        "trueconf_room_identity_info",
    ):
        assert metric in by_metric, metric
    [identity] = [t for t in table["targets"] if "trueconf_room_identity_info" in dq.metric_names(t["expr"])]
    assert dq.metric_names(identity["expr"]) == {"trueconf_room_identity_info"}, (
        "a join in the query drops the Rooms without a name: merge a query of its own"
    )
    assert "group_left" not in identity["expr"] and "name" in identity["expr"]
    # every query is grouped by the same Room labels, which the merge matches rows on
    groupings = {re.search(r"by \((job, instance, site)\b", t["expr"]) is not None for t in table["targets"]}
    assert groupings == {True}, [t["expr"] for t in table["targets"]]
    transformations = [t["id"] for t in table["transformations"]]
    assert transformations[0] == "merge", transformations
    [organize] = [t for t in table["transformations"] if t["id"] == "organize"]
    columns = set(organize["options"]["renameByName"].values())
    assert {"Room", "Name", "Site", "Problems", "Failed", "Oldest waiting", "Availability", "App state",
            "Version"} <= columns, columns  # fmt: skip
    [sort] = [t for t in table["transformations"] if t["id"] == "sortBy"]
    assert sort["options"]["sort"][0] == {"field": "Problems", "desc": True}


ROOM_LINKS = {
    "debug probe": re.compile(
        r"^\$\{exporter:raw\}/probe\?target=(?P<room>[^&]+)&module=\$\{module:percentencode\}&debug=true$"
    ),
    "recent results": re.compile(
        r"^\$\{exporter:raw\}/room\?target=(?P<room>[^&]+)&module=\$\{module:percentencode\}$"
    ),
    "status page": re.compile(r"^\$\{exporter:raw\}/$"),
}
"""The exporter pages a Room links to (docs/configuration.md's routes), the Room as its target."""


def test_every_room_links_to_its_exporter_pages(dashboard: dict[str, Any]) -> None:
    """Every panel that shows Rooms one by one links each to its debug probe, its recent results and the
    status page, through the `exporter` and `module` variables (the browser's view of the exporter)."""
    panels = _room_panels(dashboard)
    assert any(panel["title"] == ROOM_TABLE for panel in panels)
    variables = {name: dq.variables(dashboard)[name]["query"] for name in dq.LINK_VARIABLES}
    for panel in panels:
        links = dq.data_links(panel)
        room_field = "__data.fields.instance" if panel["type"] == "table" else "__field.labels.instance"
        for what, pattern in ROOM_LINKS.items():
            matching = [link for link in links if pattern.match(link["url"])]
            assert len(matching) == 1, f"{_label(panel)}: {what} link in {[link['url'] for link in links]}"
            [link] = matching
            assert link.get("title") and link.get("targetBlank") is True, _label(panel)
            room = pattern.match(link["url"]).groupdict().get("room")  # type: ignore[union-attr]
            if room is not None:
                assert room == f"${{{room_field}:percentencode}}", f"{_label(panel)}: {link['url']}"
            url = dq.link_url(link["url"], variables, "ws://room-1.example.org:8765")
            parts = urllib.parse.urlsplit(url)
            assert parts.scheme == "http" and parts.netloc, url
            if room is not None:
                query = urllib.parse.parse_qs(parts.query)
                assert query["target"] == ["ws://room-1.example.org:8765"], url
                assert query["module"] == ["default"], url


STATE_SETS = ("trueconf_file_transfer_availability", "trueconf_room_app_state")
"""Families with one series per state, exactly one of them at 1."""


def test_state_sets_show_the_state_at_1(dashboard: dict[str, Any]) -> None:
    """A state set has a series at 0 for every state the Room is not in: a panel shows the one at 1 (or
    names the state it reads), never all of them as if each were current."""
    for panel, target in dq.panel_queries(dashboard):
        for selector in dq.selectors(target["expr"]):
            if selector.metric in STATE_SETS and not any(
                m.startswith("state=") for m in dq.matcher_list(selector.matchers)
            ):
                assert re.search(rf"{selector.metric}\{{[^}}]*\}}\)?\s*==\s*1\b", target["expr"]), (
                    f"{_label(panel)}: {target['expr']}"
                )


def test_counters_are_read_as_rates(dashboard: dict[str, Any]) -> None:
    """A `_total` counter restarts with its exporter: a panel shows its rate or increase, never the value."""
    for panel, target in dq.panel_queries(dashboard):
        for name in dq.metric_names(target["expr"]):
            if name.endswith("_total"):
                assert re.search(rf"\b(?:rate|irate|increase)\(\s*{name}\b", target["expr"]), (
                    f"{_label(panel)}: {target['expr']}"
                )


def test_every_metric_in_a_query_is_exposed_by_the_exporter(
    dashboard: dict[str, Any], exposed_names: set[str]
) -> None:
    queries = [
        (f"{_label(panel)} query {target.get('refId')}", target["expr"])
        for panel, target in dq.panel_queries(dashboard)
    ]
    queries += [
        (f"variable {name}", dq.variable_query(v).expr or "")
        for name, v in dq.variables(dashboard).items()
        if v["type"] == "query"
    ]
    unknown = {where: sorted(dq.metric_names(expr) - exposed_names) for where, expr in queries}
    assert {where: names for where, names in unknown.items() if names} == {}


def _alert_thresholds() -> list[tuple[str, dq.Selector, float]]:
    """(alert, selector, number) for every alert of the form `selector > number` or `>=`."""
    found = []
    for rule in dq.load_alert_rules():
        match = re.fullmatch(
            r"\s*(?P<selector>[a-zA-Z_:][\w:]*(?:\{[^}]*\})?)\s*>=?\s*(?P<value>[\d.e+]+)\s*", rule["expr"]
        )
        if match:
            found.append((rule["alert"], dq.selectors(match["selector"])[0], float(match["value"])))
    return found


def _thresholds(panel: dict[str, Any]) -> set[float]:
    field_config = panel.get("fieldConfig", {})
    configs = [field_config.get("defaults", {}).get("thresholds")]
    configs += [
        prop.get("value")
        for override in field_config.get("overrides", [])
        for prop in override.get("properties", [])
        if prop.get("id") == "thresholds"
    ]
    return {
        float(step["value"])
        for config in configs
        if config
        for step in config.get("steps", [])
        if step.get("value") is not None
    }


def test_dashboard_thresholds_match_the_alerts(dashboard: dict[str, Any]) -> None:
    alerts = _alert_thresholds()
    assert {name for name, _, _ in alerts} >= {
        "TrueconfFileRequestWaitingTooLong",
        "TrueconfFileTransferTooLong",
        "TrueconfMalformedEntries",
    }
    for alert, alert_selector, value in alerts:
        wanted = dq.matcher_list(alert_selector.matchers)
        showing = [
            panel
            for panel in dq.panels(dashboard)
            if any(
                s.metric == alert_selector.metric and all(s.has_matcher(m) for m in wanted)
                for target in panel["targets"]
                for s in dq.selectors(target["expr"])
            )
        ]
        assert showing, f"no panel shows {alert}'s {alert_selector}"
        for panel in showing:
            compared = _compared_numbers(panel, alert_selector)
            assert compared <= {value}, f"{_label(panel)}: compares with {compared}, {alert} {value}"
            if not compared:
                assert value in _thresholds(panel), (
                    f"{_label(panel)}: thresholds {_thresholds(panel)}, {alert} {value}"
                )


def _compared_numbers(panel: dict[str, Any], alert_selector: dq.Selector) -> set[float]:
    """The numbers a panel's queries compare the alert's selector with (`selector > 900`): a panel that
    counts the Rooms past a threshold carries it in its query rather than as a colour threshold."""
    wanted = dq.matcher_list(alert_selector.matchers)
    found = set()
    for target in panel["targets"]:
        for match in re.finditer(
            rf"{alert_selector.metric}(?P<matchers>\{{[^}}]*\}})\s*(?:>|>=|==|<|<=|!=)\s*(?P<value>[\d.e+]+)",
            target["expr"],
        ):
            selector = dq.Selector(alert_selector.metric, match["matchers"])
            if all(selector.has_matcher(m) for m in wanted):
                found.add(float(match["value"]))
    return found


def test_failed_panel_uses_the_alerts_window(dashboard: dict[str, Any]) -> None:
    """Every range function of an alert (`increase(x{status="failed"}[15m])`) is drawn by a panel, with the
    alert's matchers and window."""
    windows = {
        (function, metric, matchers, window)
        for rule in dq.load_alert_rules()
        for function, metric, matchers, window in re.findall(
            r"(\w+_over_time|increase|rate)\((\w+)(\{[^}]*\})\[(\w+)\]\)", rule["expr"]
        )
    }
    assert windows
    assert {(f, m, w) for f, m, _, w in windows} >= {
        ("increase", counter, "15m") for counter in FINISHED_COUNTERS.values()
    }
    queries = [target["expr"] for _, target in dq.panel_queries(dashboard)]
    for function, metric, matchers, window in windows:
        wanted = dq.matcher_list(matchers)
        drawn = [
            match
            for q in queries
            for match in re.finditer(rf"{function}\({metric}(\{{[^}}]*\}})\[{window}\]\)", q)
            if all(dq.Selector(metric, match[1]).has_matcher(m) for m in wanted)
        ]
        assert drawn, f"no panel shows {function}({metric}{matchers}[{window}])"


def test_provisioning_files() -> None:
    datasource_files = sorted((PROVISIONING / "datasources").glob("*.yml"))
    provider_files = sorted((PROVISIONING / "dashboards").glob("*.yml"))
    assert datasource_files and provider_files
    datasources = [d for f in datasource_files for d in yaml.safe_load(f.read_text())["datasources"]]
    assert [d["type"] for d in datasources] == ["prometheus"]
    assert datasources[0]["url"].startswith("http")
    for path in datasource_files + provider_files:
        assert yaml.safe_load(path.read_text())["apiVersion"] == 1, path
    providers = [p for f in provider_files for p in yaml.safe_load(f.read_text())["providers"]]
    assert len(providers) == 1
    provider = providers[0]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert path.startswith("/"), "the provider path is the folder mounted in Grafana"
    # the comment documents the mount that makes that path hold this repository's dashboards
    text = provider_files[0].read_text()
    assert f"grafana/dashboards:{path}" in text
