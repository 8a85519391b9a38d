"""The Grafana dashboard and its provisioning files follow the project's dashboard conventions.

Each check fails with the panel (or variable) at fault. The metric names the queries may use come from a real
exporter scraped against the emulator, never from a list written here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import dashboard_queries as dq
from tests.processes import Process

pytestmark = pytest.mark.e2e

PROVISIONING = dq.ROOT / "grafana" / "provisioning"
DASHBOARD_UID = "trueconf-file-transfers"

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
}
"""What the issue says the dashboard shows at least (metric -> what for)."""


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
    assert dashboard.get("schemaVersion", 0) >= 36


def test_no_hard_coded_hosts(dashboard: dict[str, Any]) -> None:
    text = dq.DASHBOARD.read_text(encoding="utf-8")
    hosts = re.findall(
        r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\blocalhost\b|https?://[^\s\"]+|\b[\w-]+\.(?:com|org|net|local)\b", text
    )
    assert hosts == []
    for panel, target in dq.panel_queries(dashboard):
        for selector in dq.selectors(target["expr"]):
            for matcher in dq.matcher_list(selector.matchers):
                if matcher.startswith(("job", "instance")):
                    assert matcher in (dq.JOB_MATCHER, dq.INSTANCE_MATCHER), f"{_label(panel)}: {matcher}"


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


def test_job_and_instance_variables(dashboard: dict[str, Any]) -> None:
    variables = dq.variables(dashboard)
    names_in_order = [v["name"] for v in dashboard["templating"]["list"]]
    assert names_in_order[:3] == ["datasource", "job", "instance"]
    for name in ("job", "instance"):
        variable = variables[name]
        assert variable["type"] == "query", name
        assert variable.get("multi") is True, name
        assert variable.get("includeAll") is True, name
        query = dq.variable_query(variable)
        assert query.label == name
        assert query.expr is not None
    instance_query = dq.variable_query(variables["instance"])
    assert all(s.has_matcher(dq.JOB_MATCHER) for s in dq.selectors(instance_query.expr or "")), (
        "the instance variable must follow the job selection"
    )


def test_every_query_filtered_by_job_and_instance(dashboard: dict[str, Any]) -> None:
    queries = list(dq.panel_queries(dashboard))
    assert len(queries) >= 10
    for panel, target in queries:
        found = dq.selectors(target["expr"])
        assert found, f"{_label(panel)}: no selector in {target['expr']!r}"
        for selector in found:
            assert selector.metric is not None, f"{_label(panel)}: a selector without a metric name"
            assert selector.has_matcher(dq.JOB_MATCHER), f"{_label(panel)}: {selector} lacks {dq.JOB_MATCHER}"
            assert selector.has_matcher(dq.INSTANCE_MATCHER), (
                f"{_label(panel)}: {selector} lacks {dq.INSTANCE_MATCHER}"
            )


def test_unit_and_description_on_every_panel(dashboard: dict[str, Any]) -> None:
    for panel in dq.panels(dashboard):
        assert panel.get("description", "").strip(), f"{_label(panel)} has no description"
        assert panel.get("fieldConfig", {}).get("defaults", {}).get("unit"), f"{_label(panel)} has no unit"


def test_panel_ids_unique_and_layout_in_rows(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert [row["title"] for row in dq.rows(dashboard)] == ["Fleet health", "Transfers", "The exporter"]
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
    [pending] = [panel for panel in dq.panels(dashboard) if panel["title"] == "Rooms by oldest pending age"]
    sort = [t for t in pending.get("transformations", []) if t["id"] == "sortBy"]
    assert sort and sort[0]["options"]["sort"][0]["desc"] is True
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


def _reads(panel: dict[str, Any], metric: str) -> bool:
    return any(metric in dq.metric_names(target["expr"]) for target in panel["targets"])


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
            assert value in _thresholds(panel), (
                f"{_label(panel)}: thresholds {_thresholds(panel)}, {alert} {value}"
            )


def test_failed_panel_uses_the_alerts_window(dashboard: dict[str, Any]) -> None:
    windows = {
        (function, metric, window)
        for rule in dq.load_alert_rules()
        for function, metric, window in re.findall(
            r"(\w+_over_time)\((\w+)\{[^}]*\}\[(\w+)\]\)", rule["expr"]
        )
    }
    assert windows
    queries = [target["expr"] for _, target in dq.panel_queries(dashboard)]
    for function, metric, window in windows:
        pattern = rf"{function}\({metric}\{{[^}}]*\}}\[{window}\]\)"
        assert any(re.search(pattern, q) for q in queries), f"no panel shows {function}({metric}[{window}])"


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
