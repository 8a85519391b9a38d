"""prometheus/alertmanager.yml: amtool's checks, then end to end with a real Prometheus and Alertmanager.

The end-to-end test runs a small fleet on loopback: one multi-target exporter process reading five Rooms of
two sites, listed in a `file_sd` file (site `hq`: one healthy emulated Room and two Rooms that are off; site
`annex`: one Room that is off, and one that is off and labelled `schedule: office-hours`). Prometheus
(Debian's binary) runs prometheus/prometheus.yml's two jobs and its alerting block with prometheus/alerts.yml,
every `for:` shortened to 1s in a copy. Alertmanager (Debian's binary) runs prometheus/alertmanager.yml with
shorter group timers, its receivers' URLs pointed at a small HTTP server here that records each webhook
notification, and its `office-hours` interval computed to exclude the current UTC time (later: to include
it). Routes, grouping, inhibition and the relabelling are used as shipped.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import dashboard_queries as dq
from tests.processes import Process, http_get, start_daemon, wait_until
from tests.test_prometheus_e2e import start_prometheus

pytestmark = pytest.mark.e2e

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
EXAMPLE = dq.ROOT / "prometheus" / "alertmanager.yml"
DOCS = dq.ROOT / "docs" / "dashboards-and-alerts.md"
EXPORTER_JOB = "trueconf"
"""prometheus/prometheus.yml's job that scrapes an exporter's own /metrics."""
PROBE_JOB = "trueconf-probe"
"""prometheus/prometheus.yml's /probe job; the test gives it a file_sd file in place of its static list."""
GROUP_WAIT_SECONDS = 2
GROUP_INTERVAL_SECONDS = 2
WAIT_SECONDS = 30
"""The bound of every wait; each step normally takes a few seconds."""


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def load_example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


# --- the example as a file ---------------------------------------------------------------------------------


def test_amtool_check_config() -> None:
    result = amtool("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "TrueconfRoomDown", "severity": "critical", "site": "hq"}, "pager"),
        ({"alertname": "TrueconfFileTransferTooLong", "severity": "warning", "site": "hq"}, "tickets"),
        ({"alertname": "TrueconfRoomDown", "severity": "critical", "schedule": "office-hours"}, "pager"),
        (
            {"alertname": "TrueconfMalformedEntries", "severity": "warning", "schedule": "office-hours"},
            "tickets",
        ),
        ({"alertname": "TrueconfExporterDown", "severity": "critical"}, "pager"),
    ],
)
def test_routing_by_severity(labels: dict[str, str], receiver: str) -> None:
    """Critical alerts page, warnings are tickets, for scheduled Rooms too (amtool walks the route tree)."""
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={EXAMPLE}",
        f"--verify.receivers={receiver}",
        *[f"{name}={value}" for name, value in labels.items()],
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_the_routes_know() -> None:
    routed = {
        matcher
        for route in load_example()["route"]["routes"]
        for matcher in route["matchers"]
        if matcher.startswith("severity=")
    }
    assert routed == {'severity="critical"'}, "critical pages; everything else falls to the tickets receiver"
    assert {rule["labels"]["severity"] for rule in dq.load_alert_rules()} == {"critical", "warning"}


def test_the_example_fits_the_rules_and_the_prometheus_config() -> None:
    config = load_example()
    assert config["route"]["group_by"] == ["alertname", "site"]
    intervals = {interval["name"] for interval in config["time_intervals"]}
    for route in config["route"]["routes"]:
        assert set(route.get("active_time_intervals", [])) <= intervals
        if "active_time_intervals" in route:
            assert 'schedule="office-hours"' in route["matchers"], route
            assert not route.get("routes"), "a route's time intervals do not apply to its child routes"
    [inhibit] = config["inhibit_rules"]
    assert inhibit["source_matchers"][0] == 'alertname="TrueconfExporterDown"'
    assert "TrueconfExporterDown" in {rule["alert"] for rule in dq.load_alert_rules()}
    assert inhibit["equal"] == ["exporter"]
    # the labels the inhibition matches on are the ones prometheus.yml's relabelling writes
    prometheus = yaml.safe_load(dq.PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    written = {
        name: {rule["target_label"] for rule in job.get("relabel_configs", [])} for name, job in jobs.items()
    }
    assert written[EXPORTER_JOB] >= {"exporter"}
    assert written[PROBE_JOB] >= {"exporter", "metrics_path"}
    assert jobs[PROBE_JOB]["metrics_path"] == "/probe"
    [alertmanagers] = prometheus["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["127.0.0.1:9093"]}], "Alertmanager's default port"
    for receiver in config["receivers"]:
        for webhook in receiver["webhook_configs"]:
            assert webhook["url"].startswith("http://127.0.0.1:5001/"), "the documented placeholder"


def yaml_blocks(path: Path) -> list[Any]:
    """Every ```yaml block of a Markdown file, parsed."""
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)]


def jobs_shown(path: Path) -> dict[str, dict[str, Any]]:
    """The Prometheus jobs of every ```yaml block of a Markdown file, by name."""
    return {
        job["job_name"]: job
        for block in yaml_blocks(path)
        if isinstance(block, dict)
        for job in block.get("scrape_configs", [])
    }


def test_the_docs_show_the_files_as_shipped() -> None:
    """docs/dashboards-and-alerts.md's snippets: the README's Rooms job with the relabelling of
    prometheus.yml's /probe job, and the inhibition and time interval of alertmanager.yml."""
    jobs, readme_jobs = jobs_shown(DOCS), jobs_shown(dq.ROOT / "README.md")
    shipped = {j["job_name"]: j for j in yaml.safe_load(dq.PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    rooms, readme_rooms = jobs["trueconf-rooms"], readme_jobs["trueconf-rooms"]
    assert {**rooms, "relabel_configs": None} == {**readme_rooms, "relabel_configs": None}
    assert rooms["relabel_configs"][:3] == readme_rooms["relabel_configs"]
    assert rooms["relabel_configs"][3:] == shipped[PROBE_JOB]["relabel_configs"][3:]
    assert jobs["trueconf-exporter"]["relabel_configs"] == shipped[EXPORTER_JOB]["relabel_configs"]
    assert jobs["trueconf-exporter"]["static_configs"] == readme_jobs["trueconf-exporter"]["static_configs"]
    example = load_example()
    blocks = yaml_blocks(DOCS)
    [inhibit] = [b for b in blocks if isinstance(b, dict) and "inhibit_rules" in b]
    assert inhibit["inhibit_rules"] == example["inhibit_rules"]
    [intervals] = [b for b in blocks if isinstance(b, dict) and "time_intervals" in b]
    assert intervals["time_intervals"] == example["time_intervals"]


# --- end to end --------------------------------------------------------------------------------------------


class Webhook:
    """A loopback HTTP server that records every notification Alertmanager posts to it, with its path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[tuple[str, dict[str, Any]]] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with webhook._lock:
                    webhook._received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def notifications(self, receiver: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [payload for path, payload in self._received if receiver in (None, path.strip("/"))]

    def alerts(self, **labels: str) -> list[tuple[str, dict[str, Any]]]:
        """(receiver, alert) for every alert of every notification whose labels include `labels`."""
        return [
            (notification["receiver"], alert)
            for notification in self.notifications()
            for alert in notification["alerts"]
            if labels.items() <= alert["labels"].items()
        ]

    def dump(self) -> str:
        return json.dumps(self.notifications(), indent=1)[-6000:]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def rules_copy(path: Path) -> Path:
    """prometheus/alerts.yml with every `for:` shortened to 1s; expressions, thresholds, labels as shipped."""
    document = yaml.safe_load(dq.ALERTS.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def office_hours(including_now: bool) -> list[dict[str, Any]]:
    """An `office-hours` interval in UTC that holds the current time, or one at least an hour away from it."""
    if including_now:
        return [{"times": [{"start_time": "00:00", "end_time": "24:00"}], "location": "UTC"}]
    hour = datetime.datetime.now(datetime.UTC).hour
    start, end = ("13:00", "14:00") if hour < 12 else ("01:00", "02:00")
    return [{"times": [{"start_time": start, "end_time": end}], "location": "UTC"}]


def write_alertmanager_config(path: Path, webhook_url: str, including_now: bool) -> Path:
    """The example with short group timers, its receivers' URLs on `webhook_url` (same paths) and a computed
    `office-hours`; routes, grouping and inhibition as shipped."""
    config = load_example()
    config["route"].update(
        group_wait=f"{GROUP_WAIT_SECONDS}s", group_interval=f"{GROUP_INTERVAL_SECONDS}s", repeat_interval="1h"
    )
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = webhook_url + urllib.parse.urlsplit(hook["url"]).path
    [interval] = [i for i in config["time_intervals"] if i["name"] == "office-hours"]
    interval["time_intervals"] = office_hours(including_now)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_config(exporter: str, sd_file: Path, alertmanager: str, rules: Path) -> dict[str, Any]:
    """prometheus/prometheus.yml's exporter job aimed at `exporter`, its /probe job reading `sd_file` (in
    place of its static list) through `exporter`, its alerting block aimed at `alertmanager`; 1s rhythm."""
    example = yaml.safe_load(dq.PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in example["scrape_configs"]}
    own, probe = jobs[EXPORTER_JOB], jobs[PROBE_JOB]
    own["static_configs"] = [{"targets": [exporter]}]
    del probe["static_configs"]
    probe["file_sd_configs"] = [{"files": [str(sd_file)], "refresh_interval": "1s"}]
    [to_exporter] = [rule for rule in probe["relabel_configs"] if rule["target_label"] == "__address__"]
    to_exporter["replacement"] = exporter
    [alertmanagers] = example["alerting"]["alertmanagers"]
    alertmanagers["static_configs"] = [{"targets": [alertmanager]}]
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": example["alerting"],
        "scrape_configs": [own, probe],
    }


def start_alertmanager(workdir: Path, config: Path) -> tuple[Process, str]:
    return start_daemon(
        workdir,
        "alertmanager",
        lambda port, attempt: [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={workdir / f'alertmanager-data.{attempt}'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # a single Alertmanager, no gossip port
        ],
        15,
    )


def held_alerts(url: str, **labels: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds (GET /api/v2/alerts) whose labels include `labels`."""
    status, _, body = http_get(f"{url}/api/v2/alerts", timeout=5)
    assert status == 200, body
    return [alert for alert in json.loads(body) if labels.items() <= alert["labels"].items()]


def reload_alertmanager(url: str) -> None:
    request = urllib.request.Request(f"{url}/-/reload", method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        assert response.status == 200


@dataclass(frozen=True)
class Fleet:
    """The Rooms as Prometheus labels them (`instance`), and the exporter's address (`exporter`)."""

    exporter: str
    healthy: str
    hq_off: tuple[str, str]
    annex_off: str
    annex_night: str

    @property
    def rooms(self) -> set[str]:
        return {self.healthy, *self.hq_off, self.annex_off, self.annex_night}

    def file_sd(self) -> list[dict[str, Any]]:
        return [
            {"targets": [self.healthy, *self.hq_off], "labels": {"site": "hq"}},
            {"targets": [self.annex_off], "labels": {"site": "annex"}},
            {"targets": [self.annex_night], "labels": {"site": "annex", "schedule": "office-hours"}},
        ]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    yield server
    server.close()


@pytest.fixture
def closed_ports() -> Iterator[Callable[[], int]]:
    """Loopback ports that refuse connections, like a Room switched off: bound but never listening, so no
    process started during the test can take one."""
    sockets: list[socket.socket] = []

    def make() -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        return sock.getsockname()[1]

    yield make
    for sock in sockets:
        sock.close()


def test_fleet_alerts_grouped_scheduled_and_inhibited(room, processes, webhook, closed_ports, tmp_path):
    config = tmp_path / "exporter.yml"
    config.write_text("modules:\n  default:\n    timeout: 800ms\nallowed_targets: [127.0.0.1]\n")
    exporter = processes["exporter"]("--config.file", str(config))
    fleet = Fleet(
        exporter=f"127.0.0.1:{exporter.ports['http']}",
        healthy=f"127.0.0.1:{room('doc-example').ports.websocket}",  # an old download: a warning
        hq_off=(f"127.0.0.1:{closed_ports()}", f"127.0.0.1:{closed_ports()}"),
        annex_off=f"127.0.0.1:{closed_ports()}",
        annex_night=f"127.0.0.1:{closed_ports()}",
    )
    sd_file = tmp_path / "rooms.yml"
    sd_file.write_text(yaml.safe_dump(fleet.file_sd()))
    am_config = write_alertmanager_config(tmp_path / "alertmanager.yml", webhook.url, including_now=False)
    alertmanager, am_url = start_alertmanager(tmp_path, am_config)
    try:
        config = prometheus_config(
            fleet.exporter, sd_file, am_url.removeprefix("http://"), rules_copy(tmp_path / "alerts.yml")
        )
        prometheus, _ = start_prometheus(tmp_path, config)
        try:
            check_schedules_and_grouping(fleet, webhook, am_url)
            write_alertmanager_config(am_config, webhook.url, including_now=True)
            reload_alertmanager(am_url)
            check_scheduled_room_inside_its_hours(fleet, webhook)
            exporter.popen.kill()
            exporter.popen.wait(timeout=10)
            check_exporter_down_inhibits_its_rooms(fleet, webhook, am_url)
        finally:
            prometheus.stop()
    finally:
        alertmanager.stop()


def room_down(webhook: Webhook, instance: str) -> list[tuple[str, dict[str, Any]]]:
    return webhook.alerts(alertname="TrueconfRoomDown", instance=instance)


def check_schedules_and_grouping(fleet: Fleet, webhook: Webhook, am_url: str) -> None:
    # (a) The unscheduled Rooms that are off page; the healthy Room's warning (an old download) is a ticket.
    unscheduled = [*fleet.hq_off, fleet.annex_off]
    assert wait_until(lambda: all(room_down(webhook, r) for r in unscheduled), WAIT_SECONDS), webhook.dump()
    assert wait_until(lambda: webhook.alerts(instance=fleet.healthy), WAIT_SECONDS), webhook.dump()
    assert {receiver for room in unscheduled for receiver, _ in room_down(webhook, room)} == {"pager"}
    healthy = webhook.alerts(instance=fleet.healthy)
    assert {(receiver, alert["labels"]["severity"]) for receiver, alert in healthy} == {
        ("tickets", "warning")
    }

    # The Room labelled `schedule: office-hours`, off outside that interval, reaches Alertmanager (neither
    # silenced nor inhibited) and no receiver, while its group would long have been sent.
    night = {"alertname": "TrueconfRoomDown", "instance": fleet.annex_night}
    assert wait_until(lambda: held_alerts(am_url, **night), WAIT_SECONDS)
    time.sleep(GROUP_WAIT_SECONDS + GROUP_INTERVAL_SECONDS + 1)  # absent past when it would have been sent
    assert room_down(webhook, fleet.annex_night) == [], webhook.dump()
    [held] = held_alerts(am_url, **night)
    assert held["labels"]["schedule"] == "office-hours"
    assert held["status"]["state"] == "active", held

    # (c) One notification per alert and site, carrying that site's Rooms only.
    room_down_notifications = [
        n for n in webhook.notifications("pager") if n["groupLabels"]["alertname"] == "TrueconfRoomDown"
    ]
    by_site: dict[str, set[str]] = {}
    for notification in room_down_notifications:
        site = notification["groupLabels"].get("site", "")
        assert notification["groupLabels"] == {"alertname": "TrueconfRoomDown", "site": site}
        assert {alert["labels"]["site"] for alert in notification["alerts"]} == {site}
        by_site.setdefault(site, set()).update(a["labels"]["instance"] for a in notification["alerts"])
    assert by_site == {"hq": set(fleet.hq_off), "annex": {fleet.annex_off}}
    assert len({n["groupKey"] for n in room_down_notifications}) == 2
    assert len(room_down_notifications) == 2, "Rooms of a site that go down together are one notification"


def check_scheduled_room_inside_its_hours(fleet: Fleet, webhook: Webhook) -> None:
    """After a reload with an `office-hours` that holds the current time, the same Room pages."""
    assert wait_until(lambda: room_down(webhook, fleet.annex_night), WAIT_SECONDS), webhook.dump()
    [(receiver, alert)] = room_down(webhook, fleet.annex_night)
    assert receiver == "pager" and alert["labels"]["site"] == "annex"


def check_exporter_down_inhibits_its_rooms(fleet: Fleet, webhook: Webhook, am_url: str) -> None:
    """(b) With the exporter killed, every Room's /probe scrape fails too (a TrueconfExporterDown per Room);
    only the exporter's own TrueconfExporterDown pages, the Rooms' are inhibited."""

    def exporter_down_paged() -> bool:
        own = webhook.alerts(alertname="TrueconfExporterDown", instance=fleet.exporter)
        return any(alert["status"] == "firing" for _, alert in own)

    def rooms_inhibited() -> bool:
        held = held_alerts(am_url, alertname="TrueconfExporterDown", metrics_path="/probe")
        return {a["labels"]["instance"] for a in held} == fleet.rooms and all(
            a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in held
        )

    assert wait_until(exporter_down_paged, WAIT_SECONDS), webhook.dump()
    held = held_alerts(am_url, alertname="TrueconfExporterDown")
    assert wait_until(rooms_inhibited, WAIT_SECONDS), held
    time.sleep(GROUP_WAIT_SECONDS + GROUP_INTERVAL_SECONDS + 1)  # absent past when they would have been sent
    notified = webhook.alerts(alertname="TrueconfExporterDown")
    assert {alert["labels"]["instance"] for _, alert in notified} == {fleet.exporter}, webhook.dump()
    [(receiver, alert)] = [(r, a) for r, a in notified if a["status"] == "firing"]
    assert receiver == "pager"
    assert alert["labels"]["exporter"] == fleet.exporter and "metrics_path" not in alert["labels"]
