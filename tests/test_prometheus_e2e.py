"""End to end: emulated Rooms, real exporters and a real Prometheus server with the project's rules.

Two Rooms are watched: one that lists every kind of request, outgoing and incoming, and answers every optional
method with file transfer forbidden by its licence (tests/fixtures/dashboard-room.json), and one that refuses
the API (`--fault old-room`, so it has none of the optional families either). Each is read twice, the two
ways prometheus/prometheus.yml shows: by an exporter of its own on /metrics (job `trueconf`), and by one
multi-target exporter on /probe with the blackbox-style relabelling (job `trueconf-probe`). Prometheus
(Debian's binary) scrapes every second from a temporary storage directory on loopback, with the example
configuration's jobs and rules. Every query of every dashboard panel and variable then runs through
Prometheus's HTTP API, with Grafana's variables substituted the way Grafana does, and must be valid and return
data.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import dashboard_queries as dq
from tests.processes import Process, http_get, start_daemon, start_emulator, start_exporter, wait_until

pytestmark = pytest.mark.e2e

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
JOB = "trueconf"
"""The /metrics job of prometheus/prometheus.yml."""
PROBE_JOB = "trueconf-probe"
"""The /probe job of prometheus/prometheus.yml."""
WAIT_SECONDS = 30
SAMPLES_BEFORE_QUERYING = 3


@dataclass(frozen=True)
class Room:
    """One Room as Prometheus labels it."""

    job: str
    instance: str
    answers: bool
    exporter: str

    @property
    def relabelled(self) -> dict[str, str]:
        """The labels prometheus/prometheus.yml's relabelling adds for prometheus/alertmanager.yml."""
        if self.job == PROBE_JOB:
            return {"exporter": self.exporter, "metrics_path": "/probe"}
        return {"exporter": self.exporter}


@dataclass
class Stack:
    url: str
    rooms: list[Room]
    prometheus: Process

    def room(self, job: str, answers: bool) -> Room:
        return next(room for room in self.rooms if room.job == job and room.answers == answers)

    def api(self, path: str, **params: str) -> Any:
        return prometheus_api(self.url, path, **params)

    def query(self, expr: str) -> list[dict[str, Any]]:
        return instant_vector(self.url, expr)


def prometheus_api(url: str, path: str, **params: str) -> Any:
    """GET a Prometheus API path; returns `data`, failing with Prometheus's error otherwise."""
    status, _, body = http_get(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=30)
    document = json.loads(body) if body else {}
    assert status == 200 and document.get("status") == "success", (path, params, status, body[:2000])
    return document["data"]


def instant_vector(url: str, expr: str) -> list[dict[str, Any]]:
    data = prometheus_api(url, "/api/v1/query", query=expr)
    assert data["resultType"] == "vector", (expr, data["resultType"])
    result: list[dict[str, Any]] = data["result"]
    return result


def prometheus_config(exporters: list[str], multi_target_exporter: str, rooms: list[str]) -> dict[str, Any]:
    """prometheus/prometheus.yml at a 1s rhythm with the project's rules: its /metrics job aimed at
    `exporters` and the multi-target exporter's own /metrics, its /probe job (relabelling as shipped)
    listing `rooms` and sending them to `multi_target_exporter`."""
    example = yaml.safe_load(dq.PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in example["scrape_configs"]}
    single, probe = jobs[JOB], jobs[PROBE_JOB]
    single["static_configs"] = [{"targets": [*exporters, multi_target_exporter]}]
    probe["static_configs"] = [{"targets": rooms}]
    exporter_address = [rule for rule in probe["relabel_configs"] if rule["target_label"] == "__address__"]
    assert len(exporter_address) == 1, probe["relabel_configs"]
    exporter_address[0]["replacement"] = multi_target_exporter
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(dq.ALERTS.parent / name) for name in example["rule_files"]],
        "scrape_configs": [single, probe],
    }


def start_prometheus(workdir: Path, config: dict[str, Any]) -> tuple[Process, str]:
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    return start_daemon(
        workdir,
        "prometheus",
        lambda port, attempt: [
            PROMETHEUS,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / f'data.{attempt}'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        WAIT_SECONDS,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("prometheus-e2e")
    started: list[Process] = []
    try:
        healthy = start_emulator(workdir, "--scenario", str(dq.ROOM_SCENARIO))
        started.append(healthy)
        broken = start_emulator(workdir, "--scenario", "doc-example", "--fault", "old-room")
        started.append(broken)
        room_urls = [f"ws://127.0.0.1:{emulator.ports['websocket']}" for emulator in (healthy, broken)]
        exporters = []
        for url in room_urls:
            exporter = start_exporter(workdir, "--target", url, "--timeout", "0.8")
            started.append(exporter)
            exporters.append(f"127.0.0.1:{exporter.ports['http']}")
        config_file = workdir / "exporter.yml"
        config_file.write_text(
            yaml.safe_dump({"modules": {"default": {"timeout": "800ms"}}, "allowed_targets": ["127.0.0.1"]})
        )
        multi_target = start_exporter(workdir, "--config.file", str(config_file))
        started.append(multi_target)
        multi_target_address = f"127.0.0.1:{multi_target.ports['http']}"

        config = prometheus_config(exporters, multi_target_address, room_urls)
        prometheus, prometheus_url = start_prometheus(workdir, config)
        started.append(prometheus)
        rooms = [
            Room(JOB, exporters[0], True, exporters[0]),
            Room(JOB, exporters[1], False, exporters[1]),
            Room(PROBE_JOB, room_urls[0], True, multi_target_address),
            Room(PROBE_JOB, room_urls[1], False, multi_target_address),
        ]
        stack = Stack(url=prometheus_url, rooms=rooms, prometheus=prometheus)

        def scraped() -> bool:
            counts = stack.query("count_over_time(trueconf_up[1m])")
            return len(counts) == len(rooms) and all(
                float(s["value"][1]) >= SAMPLES_BEFORE_QUERYING for s in counts
            )

        never = f"Prometheus never scraped every Room:\n{prometheus.stderr[-4000:]}"
        assert wait_until(scraped, WAIT_SECONDS), never
        yield stack
    finally:
        for process in reversed(started):
            process.stop()


def substitutions(stack: Stack) -> dict[str, tuple[dict[str, str], list[Room] | None]]:
    """The variable selections a user makes, with the Rooms they select (None: All)."""
    selections: dict[str, tuple[dict[str, str], list[Room] | None]] = {
        "all": ({"job": ".*", "site": ".*", "instance": ".*"}, None),
        "every Room ticked": (
            {
                "job": dq.regex_value(sorted({room.job for room in stack.rooms})),
                "site": ".*",
                "instance": dq.regex_value([room.instance for room in stack.rooms]),
            },
            stack.rooms,
        ),
    }
    for room in stack.rooms:
        values = {
            "job": dq.regex_value([room.job]),
            "site": ".*",
            "instance": dq.regex_value([room.instance]),
        }
        selections[f"{room.job} {room.instance}"] = (values, [room])
    return selections


def scraped_names(stack: Stack, room: Room) -> set[str]:
    """The metric names Prometheus holds for one Room (a Room that does not answer has no request gauges,
    a Room read through /probe has no exporter build info)."""
    series = stack.query(f'group by (__name__) ({{job="{room.job}", instance="{room.instance}"}})')
    return {s["metric"]["__name__"] for s in series}


def test_every_panel_query_is_valid_and_returns_data(stack: Stack) -> None:
    """With All, every query returns data; with Rooms selected, every query whose metrics those Rooms have
    returns data, and only theirs. (The exporter's own metrics in multi-target mode, like its config reloads,
    belong to no Room: they show with All.)"""
    queries = list(dq.panel_queries(dq.load_dashboard()))
    assert len(queries) >= 10
    empty = []
    for selection, (values, rooms) in substitutions(stack).items():
        names: set[str] = set()
        for room in rooms or []:
            room_names = scraped_names(stack, room)
            assert "trueconf_up" in room_names, f"Prometheus has no Room labelled {room}"
            names |= room_names
        for panel, target in queries:
            expr = dq.substitute(target["expr"], values)
            result = stack.query(expr)  # fails on a query Prometheus rejects
            where = f"{selection}: {panel['title']!r} {target['refId']}: {expr}"
            must_show_data = rooms is None or dq.metric_names(target["expr"]) <= names
            if must_show_data and not result:
                empty.append(where)
            if rooms is not None:
                # the selection filters: nothing of another Room (aggregates without labels are fine)
                for series in result:
                    labels = series["metric"]
                    assert any(
                        labels.get("instance", room.instance) == room.instance
                        and labels.get("job", room.job) == room.job
                        for room in rooms
                    ), f"{where}: {labels}"
    assert empty == []
    # a Room read on /metrics has every Room metric: each query of its selection had to show data
    names = scraped_names(stack, stack.room(JOB, answers=True))
    room_queries = [t for p, t in queries if p["title"] != "Config reloads"]
    assert all(dq.metric_names(target["expr"]) <= names for target in room_queries), names


def test_time_series_panels_have_data_over_a_range(stack: Stack) -> None:
    end = time.time()
    values, _ = substitutions(stack)["all"]
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
    assert jobs == {JOB, PROBE_JOB}
    # what Grafana itself calls for label_values(): the label values API with a series selector
    assert set(stack.api(f"/api/v1/label/{job.label}/values", **{"match[]": job.expr or ""})) == jobs

    everything = {room.instance for room in stack.rooms}
    for selected, wanted in (
        (".*", everything),
        (dq.regex_value(sorted(jobs)), everything),
        (dq.regex_value([PROBE_JOB]), {room.instance for room in stack.rooms if room.job == PROBE_JOB}),
        ("no-such-job", set()),
    ):
        instance_expr = dq.substitute(instance.as_promql(), {"job": selected, "site": ".*"})
        assert {s["metric"][instance.label] for s in stack.query(instance_expr)} == wanted, selected


def test_every_rule_group_loaded_and_healthy(stack: Stack) -> None:
    expected = yaml.safe_load(dq.ALERTS.read_text(encoding="utf-8"))["groups"]

    def evaluated() -> bool:
        groups = stack.api("/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return bool(rules) and all(not rule["lastEvaluation"].startswith("0001") for rule in rules)

    assert wait_until(evaluated, WAIT_SECONDS), "the rules were never evaluated"
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
    """The fixture Room's old requests, malformed entry and forbidden file transfer, and the broken Room, make
    alerts pending (their `for:` is longer than this test) through both jobs; nothing else is active (the
    broken Room has no availability family, so no TrueconfFileTransferUnavailable)."""
    expected = set()
    for room in stack.rooms:
        if room.answers:
            for name in (
                "TrueconfFileRequestWaitingTooLong",
                "TrueconfFileTransferTooLong",
                "TrueconfMalformedEntries",
                "TrueconfFileTransferUnavailable",
            ):
                expected.add((name, room.job, room.instance))
        else:
            expected.add(("TrueconfRoomDown", room.job, room.instance))

    def active() -> dict[tuple[str, str, str], dict[str, Any]]:
        alerts = stack.api("/api/v1/alerts")["alerts"]
        return {(a["labels"]["alertname"], a["labels"]["job"], a["labels"]["instance"]): a for a in alerts}

    assert wait_until(lambda: set(active()) >= expected, WAIT_SECONDS), active()
    alerts = active()
    assert set(alerts) == expected
    for room in stack.rooms:
        if room.answers:
            waiting = alerts[("TrueconfFileRequestWaitingTooLong", room.job, room.instance)]
            assert waiting["labels"] == {
                "alertname": "TrueconfFileRequestWaitingTooLong",
                "job": room.job,
                "instance": room.instance,
                "status": "waiting",
                "severity": "warning",
                **room.relabelled,
            }
            assert float(waiting["value"]) >= 1200
            assert f"Room {room.instance} has been waiting" in waiting["annotations"]["description"]
            unavailable = alerts[("TrueconfFileTransferUnavailable", room.job, room.instance)]
            assert unavailable["labels"] == {
                "alertname": "TrueconfFileTransferUnavailable",
                "job": room.job,
                "instance": room.instance,
                "severity": "warning",
                **room.relabelled,
            }
            assert unavailable["state"] == "pending"
            description = unavailable["annotations"]["description"]
            assert description.startswith(f"Room {room.instance} (job {room.job}) has reported"), description
            assert "file-transfer state: forbidden_by_license (" in description, description
        else:
            down = alerts[("TrueconfRoomDown", room.job, room.instance)]
            assert down["labels"] == {
                "alertname": "TrueconfRoomDown",
                "job": room.job,
                "instance": room.instance,
                "severity": "critical",
                **room.relabelled,
            }
            assert down["annotations"]["description"].endswith("reason of the last failure: api.")
