"""The alerting rules and the example Prometheus configuration, checked by Debian's promtool.

`promtool test rules` runs the unit tests in prometheus/tests/; the checks here make sure those tests cover
every alert both firing and not firing, and that the rules follow the monitoring-mixin conventions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import dashboard_queries as dq
from tests.processes import Process

pytestmark = pytest.mark.e2e

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS_METRICS = {"up"}
"""Series Prometheus makes itself, which an alert on the exporter being unreachable needs."""


def promtool(*args: str, cwd: Path = dq.ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def unit_test_files() -> list[Path]:
    return sorted(dq.PROMTOOL_TESTS.glob("*.yml"))


def alert_cases() -> list[dict[str, Any]]:
    """Every `alert_rule_test` case of every promtool unit test file."""
    return [
        case
        for path in unit_test_files()
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(dq.ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(dq.load_alert_rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    files = unit_test_files()
    assert files
    result = promtool("test", "rules", *[str(path.relative_to(dq.ROOT)) for path in files])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


def test_unit_tests_load_the_project_rules() -> None:
    for path in unit_test_files():
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        rule_files = [(path.parent / name).resolve() for name in document["rule_files"]]
        assert rule_files == [dq.ALERTS], path


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    alerts = {rule["alert"] for rule in dq.load_alert_rules()}
    cases = alert_cases()
    tested = {case["alertname"] for case in cases}
    assert tested - alerts == set(), "a test names an alert that does not exist, so it can only pass"
    for alert in sorted(alerts):
        firing = [case for case in cases if case["alertname"] == alert and case.get("exp_alerts")]
        quiet = [case for case in cases if case["alertname"] == alert and not case.get("exp_alerts")]
        assert firing, f"{alert} is never shown firing"
        assert quiet, f"{alert} is never shown not firing"
        for case in firing:
            for expected in case["exp_alerts"]:
                assert set(expected.get("exp_annotations", {})) == {"summary", "description"}, alert
                assert "severity" in expected.get("exp_labels", {}), alert


def test_alerts_follow_the_mixin_conventions() -> None:
    rules = dq.load_alert_rules()
    assert len(rules) >= 5
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"Trueconf(?:[A-Z][a-z0-9]+)+", name), (
            f"{name}: CamelCase with the Trueconf prefix"
        )
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "description"}, name
        assert "$labels.instance" in annotations["description"], f"{name}: the description names the Room"
        comparison = re.search(r"(==|!=|>=|<=|>|<)\s*(\S+)\s*$", rule["expr"].strip())
        assert comparison, f"{name}: an alert expression ends in a comparison"
        if comparison.group(0).replace(" ", "") != "==0":
            assert "$value" in annotations["description"], f"{name}: the description gives the value"
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))


def test_alerts_cover_what_the_issue_asks_for() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in dq.load_alert_rules()}
    assert any(re.search(r"\btrueconf_up\b\s*==\s*0", e) for e in exprs.values()), (
        "a Room that cannot be read"
    )
    assert any('status="waiting"' in e for e in exprs.values()), "a request waiting too long"
    assert any('status="downloading"' in e for e in exprs.values()), "a download in progress too long"
    assert any('status="failed"' in e for e in exprs.values()), "new failed requests"
    assert any("trueconf_outgoing_file_requests_malformed" in e for e in exprs.values()), "malformed replies"
    unavailable = exprs.get("TrueconfFileTransferUnavailable", "")
    assert 'trueconf_file_transfer_availability{state="available"}' in unavailable, (
        "file transfer unavailable"
    )
    [rule] = [r for r in dq.load_alert_rules() if r["alert"] == "TrueconfFileTransferUnavailable"]
    assert (rule["for"], rule["labels"]["severity"]) == ("15m", "warning")


FINISHED_COUNTERS = {
    "outgoing": ("trueconf_outgoing_file_requests_finished_total", "destination"),
    "incoming": ("trueconf_incoming_file_requests_finished_total", "source"),
}
"""Each direction's counter of finished requests, and its side label."""


def test_failures_are_counted_by_the_finished_counters() -> None:
    """TrueconfFileRequestsFailed reads the failed counters of both directions through increase() over one
    window (never a gauge of what the Room lists, which forgets), sums away only the status and side labels,
    names the direction, and fires at once."""
    [rule] = [r for r in dq.load_alert_rules() if r["alert"] == "TrueconfFileRequestsFailed"]
    expr = " ".join(rule["expr"].split())
    assert dq.metric_names(expr) == {counter for counter, _ in FINISHED_COUNTERS.values()}
    assert {s.matchers for s in dq.selectors(expr)} == {'{status="failed"}'}
    for direction, (counter, side) in FINISHED_COUNTERS.items():
        counted = (
            f'label_replace( sum without (status, {side}) ( increase({counter}{{status="failed"}}[15m]) ), '
            f'"direction", "{direction}", "", "" )'
        )
        assert counted in expr, (direction, expr)
    assert expr.endswith(") > 0"), expr
    assert "for" not in rule, "a failure is news at once"
    assert "$labels.direction" in rule["annotations"]["description"]


@pytest.fixture
def exposed_names(processes: dict[str, Callable[..., Process]], tmp_path: Path) -> set[str]:
    return dq.exposed_metric_names(processes, tmp_path)


def test_alerts_read_only_metrics_the_exporter_exposes(exposed_names: set[str]) -> None:
    assert "trueconf_up" in exposed_names
    for rule in dq.load_alert_rules():
        unknown = dq.metric_names(rule["expr"]) - exposed_names - PROMETHEUS_METRICS
        assert unknown == set(), rule["alert"]


def test_example_prometheus_config() -> None:
    result = promtool("check", "config", str(dq.PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(dq.PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert all(name.startswith("trueconf") for name in jobs), "TrueconfExporterDown selects job=~'trueconf.*'"
    assert jobs["trueconf"].get("metrics_path", "/metrics") == "/metrics"
    probe = jobs["trueconf-probe"]
    assert probe["metrics_path"] == "/probe"
    assert "params" not in probe, "a job's params would override every target's own __param_module"
    relabel = [(tuple(r.get("source_labels", [])), r["target_label"]) for r in probe["relabel_configs"]]
    assert relabel == [
        (("__address__",), "__param_target"),
        (("__param_target",), "instance"),
        ((), "__address__"),
        # the labels prometheus/alertmanager.yml's inhibition matches on (tests/test_alertmanager_e2e.py)
        (("__address__",), "exporter"),
        (("__metrics_path__",), "metrics_path"),
    ]
    own = [(tuple(r["source_labels"]), r["target_label"]) for r in jobs["trueconf"]["relabel_configs"]]
    assert own == [(("__address__",), "exporter")], "the exporter's own series name it like its Rooms' do"


def test_commented_file_sd_job_is_valid(tmp_path: Path) -> None:
    """The file_sd variant is shipped commented out; uncommented, Prometheus must accept it."""
    text = dq.PROMETHEUS_CONFIG.read_text(encoding="utf-8")
    block = text[text.index("  # - job_name: trueconf-probe-file-sd") :]
    uncommented = "\n".join(re.sub(r"^  # ?", "  ", line) for line in block.splitlines())
    config = yaml.safe_load("scrape_configs:\n" + uncommented)
    job = config["scrape_configs"][0]
    assert job["file_sd_configs"][0]["files"] == ["rooms/*.yml"]
    active = yaml.safe_load(text)["scrape_configs"]
    probe = next(active_job for active_job in active if active_job["job_name"] == "trueconf-probe")
    assert job["relabel_configs"] == probe["relabel_configs"], "the two /probe jobs relabel alike"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
