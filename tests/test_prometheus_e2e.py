"""End to end: emulated Rooms, real exporters and a real Prometheus server with the project's rules.

Two Rooms are watched: one that lists every kind of request (tests/fixtures/dashboard-room.json) and one that
refuses the API (`--fault old-room`). Prometheus (Debian's binary) scrapes both exporters every second from a
temporary storage directory on loopback, with a configuration derived from prometheus/prometheus.yml. Every
query of every dashboard panel and variable then runs through Prometheus's HTTP API, with Grafana's variables
substituted the way Grafana does, and must be valid and return data.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import dashboard_queries as dq
from tests.processes import Process, http_get, start_emulator, start_exporter

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
JOB = "trueconf"
"""The /metrics job of prometheus/prometheus.yml."""
WAIT_SECONDS = 30
SAMPLES_BEFORE_QUERYING = 3


@dataclass
class Stack:
    url: str
    healthy: str
    """`instance` of the exporter reading the Room that lists every kind of request."""
    broken: str
    """`instance` of the exporter reading the Room that refuses the API."""
    prometheus: Process

    def api(self, path: str, **params: str) -> Any:
        """GET a Prometheus API path; returns `data`, failing with Prometheus's error otherwise."""
        query = urllib.parse.urlencode(params)
        status, _, body = http_get(f"{self.url}{path}?{query}", timeout=10)
        document = json.loads(body) if body else {}
        assert status == 200 and document.get("status") == "success", (path, params, status, body[:2000])
        return document["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return data["result"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prometheus_config(targets: list[str]) -> dict[str, Any]:
    """prometheus/prometheus.yml with its /metrics job aimed at `targets`, a 1s rhythm, the project rules."""
    example = yaml.safe_load(dq.PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    job = next(job for job in example["scrape_configs"] if job["job_name"] == JOB)
    job["static_configs"] = [{"targets": targets}]
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(dq.ALERTS.parent / name) for name in example["rule_files"]],
        "scrape_configs": [job],
    }


def start_prometheus(workdir: Path, config: dict[str, Any]) -> tuple[Process, str]:
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    for attempt in range(3):
        port = free_port()
        stdout_path, stderr_path = (
            workdir / f"prometheus.{attempt}.out",
            workdir / f"prometheus.{attempt}.err",
        )
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            popen = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={workdir / f'data.{attempt}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
            )
        process = Process(popen, stdout_path, stderr_path)
        url = f"http://127.0.0.1:{port}"
        up = wait_until(lambda url=url, process=process: _ready(url) or not process.alive())
        if up and process.alive():
            return process, url
        process.stop()
        if "address already in use" not in process.stderr:
            break
    raise AssertionError(f"Prometheus did not start:\n{process.stderr[-4000:]}")


def _ready(url: str) -> bool:
    try:
        status, _, _ = http_get(f"{url}/-/ready", timeout=2)
    except OSError:
        return False
    return status == 200


def wait_until(condition: Callable[[], bool], seconds: float = WAIT_SECONDS) -> bool:
    """Poll `condition` until it holds or `seconds` pass; returns whether it held."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("prometheus-e2e")
    started: list[Process] = []
    try:
        room = start_emulator(workdir, "--scenario", str(dq.ROOM_SCENARIO))
        started.append(room)
        old_room = start_emulator(workdir, "--scenario", "doc-example", "--fault", "old-room")
        started.append(old_room)
        exporters = []
        for emulator in (room, old_room):
            target = f"ws://127.0.0.1:{emulator.ports['websocket']}"
            exporter = start_exporter(workdir, "--target", target, "--timeout", "0.8")
            started.append(exporter)
            exporters.append(f"127.0.0.1:{exporter.ports['http']}")
        prometheus, url = start_prometheus(workdir, prometheus_config(exporters))
        started.append(prometheus)
        stack = Stack(url=url, healthy=exporters[0], broken=exporters[1], prometheus=prometheus)

        def scraped() -> bool:
            counts = stack.query(f'count_over_time(trueconf_up{{job="{JOB}"}}[1m])')
            return len(counts) == 2 and all(float(s["value"][1]) >= SAMPLES_BEFORE_QUERYING for s in counts)

        assert wait_until(scraped), f"Prometheus never scraped both exporters:\n{prometheus.stderr[-4000:]}"
        yield stack
    finally:
        for process in reversed(started):
            process.stop()


def substitutions(stack: Stack) -> dict[str, dict[str, str]]:
    """The variable selections a user makes: All, both Rooms ticked, each Room alone."""
    return {
        "all": {"job": ".*", "instance": ".*"},
        "both ticked": {
            "job": dq.regex_value([JOB]),
            "instance": dq.regex_value([stack.healthy, stack.broken]),
        },
        "healthy Room": {"job": dq.regex_value([JOB]), "instance": dq.regex_value([stack.healthy])},
        "broken Room": {"job": dq.regex_value([JOB]), "instance": dq.regex_value([stack.broken])},
    }


def test_every_panel_query_is_valid_and_returns_data(stack: Stack) -> None:
    dashboard = dq.load_dashboard()
    queries = list(dq.panel_queries(dashboard))
    assert len(queries) >= 10
    empty = []
    for selection, values in substitutions(stack).items():
        for panel, target in queries:
            expr = dq.substitute(target["expr"], values)
            result = stack.query(expr)  # fails on a query Prometheus rejects
            where = f"{selection}: {panel['title']!r} {target['refId']}: {expr}"
            if selection == "broken Room":
                # a Room that does not answer has only up, the duration and the error reason: no request data
                assert {s["metric"].get("instance", stack.broken) for s in result} <= {stack.broken}, where
                continue
            if not result:
                empty.append(where)
            if selection == "healthy Room":
                assert {s["metric"].get("instance", stack.healthy) for s in result} == {stack.healthy}, where
    assert empty == []


def test_time_series_panels_have_data_over_a_range(stack: Stack) -> None:
    end = time.time()
    values = substitutions(stack)["all"]
    for panel, target in dq.panel_queries(dq.load_dashboard()):
        if target.get("instant") and not target.get("range"):
            continue
        expr = dq.substitute(target["expr"], values)
        data = stack.api("/api/v1/query_range", query=expr, start=str(end - 30), end=str(end), step="1")
        assert data["resultType"] == "matrix"
        assert data["result"], f"{panel['title']!r}: {expr}"


def test_variable_queries_list_the_jobs_and_rooms(stack: Stack) -> None:
    variables = dq.variables(dq.load_dashboard())
    job = dq.variable_query(variables["job"])
    instance = dq.variable_query(variables["instance"])

    jobs = {s["metric"][job.label] for s in stack.query(dq.substitute(job.as_promql(), {}))}
    assert jobs == {JOB}
    # what Grafana itself calls for label_values(): the label values API with a series selector
    assert set(stack.api(f"/api/v1/label/{job.label}/values", **{"match[]": job.expr or ""})) == jobs

    for selected in (".*", dq.regex_value([JOB])):
        instance_expr = dq.substitute(instance.as_promql(), {"job": selected})
        rooms = {s["metric"][instance.label] for s in stack.query(instance_expr)}
        assert rooms == {stack.healthy, stack.broken}
    nothing = dq.substitute(instance.as_promql(), {"job": "no-such-job"})
    assert stack.query(nothing) == []


def test_every_rule_group_loaded_and_healthy(stack: Stack) -> None:
    expected = yaml.safe_load(dq.ALERTS.read_text(encoding="utf-8"))["groups"]

    def evaluated() -> bool:
        groups = stack.api("/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return bool(rules) and all(not rule["lastEvaluation"].startswith("0001") for rule in rules)

    assert wait_until(evaluated), "the rules were never evaluated"
    groups = stack.api("/api/v1/rules")["groups"]
    assert [g["name"] for g in groups] == [g["name"] for g in expected]
    for group, wanted in zip(groups, expected, strict=True):
        assert [r["name"] for r in group["rules"]] == [
            r.get("alert") or r.get("record") for r in wanted["rules"]
        ]
        for rule in group["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
            assert not rule.get("lastError"), rule["name"]


def test_alerts_become_active_on_real_exporter_data(stack: Stack) -> None:
    """The fixture Room's old requests and malformed entry, and the broken Room, make alerts pending (their
    `for:` is longer than this test); nothing else is active."""
    expected = {
        ("TrueconfRoomDown", stack.broken),
        ("TrueconfFileRequestWaitingTooLong", stack.healthy),
        ("TrueconfFileTransferTooLong", stack.healthy),
        ("TrueconfMalformedEntries", stack.healthy),
    }

    def active() -> set[tuple[str, str]]:
        alerts = stack.api("/api/v1/alerts")["alerts"]
        return {(a["labels"]["alertname"], a["labels"]["instance"]) for a in alerts}

    assert wait_until(lambda: active() >= expected), active()
    alerts = {
        (a["labels"]["alertname"], a["labels"]["instance"]): a for a in stack.api("/api/v1/alerts")["alerts"]
    }
    assert set(alerts) == expected
    room_down = alerts[("TrueconfRoomDown", stack.broken)]
    assert room_down["labels"] == {
        "alertname": "TrueconfRoomDown",
        "job": JOB,
        "instance": stack.broken,
        "severity": "critical",
    }
    assert room_down["annotations"]["description"].endswith("reason of the last failure: api.")
    waiting = alerts[("TrueconfFileRequestWaitingTooLong", stack.healthy)]
    assert waiting["labels"]["status"] == "waiting"
    assert float(waiting["value"]) >= 1200
