"""The demo raises exactly the alerts its banner promises, and the pages demo-stack prints exist.

One demo process (its own prober off), Debian's Prometheus with prometheus/prometheus.yml aimed at it (ports
moved, 2 s rhythm) and a copy of prometheus/alerts.yml whose `for:` are all 1s, and Debian's Alertmanager with
prometheus/alertmanager.yml (receivers aimed at a closed port). Prometheus must find, within WAIT_SECONDS,
exactly one firing alert for each Room the banner gives one, and never anything, pending or firing, for the
Rooms it says raise none. The shipped `for:` are then checked by promtool on the series Prometheus scraped:
each alert is still pending just before the banner's time and firing just after it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.emulator.fleet import ROOMS, DemoRoom
from tests import dashboard_queries as dq
from tests.processes import Process, http_get, start, wait_for
from tests.test_alert_rules import promtool
from tests.test_alertmanager_e2e import AMTOOL, rules_copy, start_alertmanager
from tests.test_cli import free_port_run
from tests.test_prometheus_e2e import start_prometheus

pytestmark = pytest.mark.e2e

DEMO_STACK = dq.ROOT / "scripts" / "demo-stack.sh"
WAIT_SECONDS = 45
"""The bound on Prometheus finding every promised alert (normally about 20 s: the failing Room's first
failure after the first scrape comes some 13 s after the demo starts)."""
SCRAPE_SECONDS = 2
SHIPPED_PROMETHEUS = yaml.safe_load(dq.PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
SHIPPED_EXPORTER = SHIPPED_PROMETHEUS["scrape_configs"][0]["static_configs"][0]["targets"][0]
SHIPPED_ALERTMANAGER = "127.0.0.1:9093"
SHIPPED_PROMETHEUS_ADDRESS = "127.0.0.1:9090"


@dataclass
class Stack:
    exporter: str
    first_port: int
    prometheus: str
    alertmanager: str

    def target(self, room: DemoRoom) -> str:
        return f"127.0.0.1:{room.port(self.first_port)}"

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        status, _, body = http_get(url, timeout=10)
        assert status == 200, body
        return json.loads(body)["data"]


def prometheus_config(exporter: str, first_port: int, alertmanager: str, rules: Path) -> dict[str, Any]:
    """prometheus/prometheus.yml with the demo's ports moved to this test's, its rules a local copy."""
    text = dq.PROMETHEUS_CONFIG.read_text(encoding="utf-8").replace(SHIPPED_EXPORTER, exporter)
    text = text.replace(SHIPPED_ALERTMANAGER, alertmanager)
    for room in ROOMS:
        text = text.replace(f"127.0.0.1:{room.port()}", f"127.0.0.1:{room.port(first_port)}")
    config = yaml.safe_load(text)
    interval = f"{SCRAPE_SECONDS}s"
    config["global"] = {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": "1s"}
    config["rule_files"] = [str(rules)]
    return config


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("demo-alerts")
    first = free_port_run(len(ROOMS))
    demo = start(
        [
            *("demo", "--web.listen-address", "127.0.0.1:0", "--rooms.first-port", str(first)),
            *("--rooms.probe-interval", "0", "--log.level", "error"),
        ],
        workdir,
        name="demo",
    )
    started: list[Process] = [demo]
    try:
        wait_for(demo, "stdout", "make demo-stack")
        exporter = re.search(r"status page  http://(\S+)/ ", demo.stdout)
        assert exporter is not None, demo.stdout
        closed = free_port_run(1)  # nothing listens there: notifications go nowhere
        config = yaml.safe_load(dq.ROOT.joinpath("prometheus", "alertmanager.yml").read_text())
        for receiver in config["receivers"]:
            for hook in receiver["webhook_configs"]:
                hook["url"] = hook["url"].replace("127.0.0.1:5001", f"127.0.0.1:{closed}")
        am_config = workdir / "alertmanager.yml"
        am_config.write_text(yaml.safe_dump(config, sort_keys=False))
        alertmanager, am_url = start_alertmanager(workdir, am_config)
        started.append(alertmanager)
        rules = rules_copy(workdir / "alerts.yml")
        config = prometheus_config(exporter.group(1), first, am_url.removeprefix("http://"), rules)
        prometheus, url = start_prometheus(workdir, config)
        started.append(prometheus)
        yield Stack(exporter.group(1), first, url, am_url)
    finally:
        for process in reversed(started):
            process.stop()


def test_prometheus_finds_exactly_the_alerts_the_banner_promises(stack: Stack) -> None:
    promised = {(stack.target(r), r.alert) for r in ROOMS if r.alert is not None}
    quiet = {stack.target(r) for r in ROOMS if r.alert is None}
    seen: list[dict[str, Any]] = []

    def firing() -> set[tuple[str, str]]:
        alerts = stack.api("alerts")["alerts"]
        seen.extend(alerts)
        return {
            (a["labels"].get("instance", ""), a["labels"]["alertname"])
            for a in alerts
            if a["state"] == "firing"
        }

    deadline = time.monotonic() + WAIT_SECONDS
    while firing() != promised and time.monotonic() < deadline:
        time.sleep(0.5)  # the poll interval of this bounded wait
    assert firing() == promised, json.dumps(seen[-20:], indent=1)
    noisy = [a for a in seen if a["labels"].get("instance") in quiet]
    assert noisy == [], noisy
    assert {(a["labels"].get("instance", ""), a["labels"]["alertname"]) for a in seen} == promised, (
        "nothing else"
    )


def promtool_case(series: list[dict[str, Any]], expected: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A promtool unit test: the scraped `series` held still for 20 minutes, and for every alert, 15 s before
    and after each banner time, the Rooms firing it (`expected`: each Room's exp_labels and exp_annotations,
    by name)."""
    minutes = 20
    steps = minutes * 60 // 15
    input_series = []
    for sample in series:
        metric = dict(sample["metric"])
        name = metric.pop("__name__")
        selector = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(metric.items()))
        values = " ".join([sample["value"][1]] * steps)
        input_series.append({"series": f"{name}{{{selector}}}", "values": values})
    banner_seconds = {r.name: 60 * int(r.fires_after.removesuffix("m")) for r in ROOMS if r.fires_after}
    times = {15, minutes * 60 - 15} | {t + d for t in banner_seconds.values() for d in (-15, 15)}
    cases = [
        {
            "eval_time": f"{at}s",
            "alertname": rule["alert"],
            "exp_alerts": [
                expected[room.name]
                for room in ROOMS
                if room.alert == rule["alert"] and banner_seconds.get(room.name, at + 1) <= at
            ],
        }
        for rule in dq.load_alert_rules()
        for at in sorted(times)
    ]
    return {
        "rule_files": [str(dq.ALERTS)],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": input_series, "alert_rule_test": cases}],
    }


def test_the_shipped_for_times_are_the_banners(stack: Stack, tmp_path: Path) -> None:
    """promtool, with the shipped alerts.yml, on the Rooms' series as Prometheus scraped them (the failing
    Room's held still, so it raises nothing here): each alert pending 15 s before the banner's time, firing
    15 s after, and nothing at all for the other Rooms over 20 minutes."""
    test_prometheus_finds_exactly_the_alerts_the_banner_promises(stack)
    firing = [a for a in stack.api("alerts")["alerts"] if a["state"] == "firing"]
    expected = {
        room.name: {
            "exp_labels": {k: v for k, v in alert["labels"].items() if k != "alertname"},
            "exp_annotations": alert["annotations"],
        }
        for room in ROOMS
        for alert in firing
        if alert["labels"]["instance"] == stack.target(room) and alert["labels"]["alertname"] == room.alert
    }
    series = [
        s
        for s in stack.api("query", query='{job=~"trueconf.*"}')["result"]
        if not s["metric"]["__name__"].startswith("ALERTS")
    ]
    assert {s["metric"]["instance"] for s in series} == {stack.exporter} | {stack.target(r) for r in ROOMS}
    test_file = tmp_path / "demo_test.yml"
    test_file.write_text(yaml.safe_dump(promtool_case(series, expected), sort_keys=False))
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "SUCCESS" in result.stdout


def printed_urls() -> list[str]:
    """The Prometheus page URLs scripts/demo-stack.sh prints."""
    return re.findall(rf"http://{re.escape(SHIPPED_PROMETHEUS_ADDRESS)}(/\S*)", DEMO_STACK.read_text())


def test_every_prometheus_page_demo_stack_prints_answers(stack: Stack) -> None:
    paths = printed_urls()
    assert "/classic/alerts" in paths
    for path in paths:
        status, _, body = http_get(stack.prometheus + path, timeout=10)
        assert status == 200, (path, body[:200])
        assert b"404 page not found" not in body, path


def test_every_amtool_command_demo_stack_prints_works(stack: Stack) -> None:
    shipped = f"--alertmanager.url=http://{SHIPPED_ALERTMANAGER}"
    commands = [line.split() for line in re.findall(r"^\s*(amtool .*)$", DEMO_STACK.read_text(), re.M)]
    assert commands and all(shipped in command for command in commands)
    test_prometheus_finds_exactly_the_alerts_the_banner_promises(stack)  # firing: sent to Alertmanager
    outputs = []
    for command in commands:
        argv = [
            AMTOOL,
            *[f"--alertmanager.url={stack.alertmanager}" if a == shipped else a for a in command[1:]],
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, (command, result.stderr)
        outputs.append(result.stdout)
    assert "TrueconfFileRequestWaitingTooLong" in outputs[0], outputs[0]
