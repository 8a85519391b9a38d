"""The README's Prometheus recipe for `/probe` (with docs/fleet.md's sharding), run for real.

Two Prometheus servers (Debian's binary) read one `file_sd` file listing six emulated Rooms, each keeps its
`hashmod` shard, and each scrapes its Rooms through one exporter process with the README's relabelling, read
from the README itself, and docs/fleet.md's sharding steps.
Together they must see every Room exactly once, with the module chosen per group by `__param_module`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from tests.processes import free_port, http_get

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ROOM_PIN = "57721566"
WAIT_SECONDS = 40

pytestmark = pytest.mark.e2e


def yaml_blocks(path: Path) -> list[object]:
    """Every ```yaml block of a Markdown file, parsed."""
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)]


def scrape_config(exporter: str, sd_file: Path, shard: int, shards: int) -> dict:
    """The README's job as written, with docs/fleet.md's hashmod steps in front and test-sized intervals."""
    [job] = [
        job
        for block in yaml_blocks(ROOT / "README.md")
        if isinstance(block, dict)
        for job in block.get("scrape_configs", [])
        if job["job_name"] == "trueconf-rooms"
    ]
    [sharding] = [
        block
        for block in yaml_blocks(ROOT / "docs" / "fleet.md")
        if isinstance(block, list) and any(step.get("action") == "hashmod" for step in block)
    ]
    sharding[0]["modulus"] = shards
    sharding[1]["regex"] = str(shard)
    *rewrites, to_exporter = job["relabel_configs"]
    assert to_exporter["target_label"] == "__address__", "the last step sends the scrape to the exporter"
    return {
        **job,
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "file_sd_configs": [{"files": [str(sd_file)], "refresh_interval": "1s"}],
        "relabel_configs": [*sharding, *rewrites, {**to_exporter, "replacement": exporter}],
    }


def query(url: str, expr: str) -> list[dict]:
    status, _, body = http_get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=10)
    document = json.loads(body)
    assert status == 200 and document["status"] == "success", body
    return document["data"]["result"]


def test_sharded_prometheus_servers_probe_every_room_once(room, processes, tmp_path):
    secured = [room("doc-example", pin=ROOM_PIN).ports for _ in range(3)]
    open_rooms = [room("doc-example").ports for _ in range(3)]
    (tmp_path / "pin").write_text(ROOM_PIN)
    config = tmp_path / "exporter.yml"
    config.write_text(
        "modules:\n  default:\n    pin_file: pin\n    timeout: 800ms\n"
        "  open:\n    discovery: true\n    timeout: 800ms\nallowed_targets: [127.0.0.1]\n"
    )
    exporter = processes["exporter"]("--config.file", str(config))
    exporter_address = f"127.0.0.1:{exporter.ports['http']}"

    sd_file = tmp_path / "rooms.yml"
    sd_file.write_text(
        yaml.safe_dump(
            [
                {"targets": [f"127.0.0.1:{p.websocket}" for p in secured], "labels": {"site": "hq"}},
                # discovery: the web UI port is listed, the exporter asks it for the WebSocket port
                {
                    "targets": [f"127.0.0.1:{p.web}" for p in open_rooms],
                    "labels": {"site": "annex", "__param_module": "open"},
                },
            ]
        )
    )
    expected = {f"127.0.0.1:{p.websocket}" for p in secured} | {f"127.0.0.1:{p.web}" for p in open_rooms}

    servers = []
    for shard in (0, 1):
        folder = tmp_path / f"prometheus-{shard}"
        folder.mkdir()
        (folder / "prometheus.yml").write_text(
            yaml.safe_dump({"scrape_configs": [scrape_config(exporter_address, sd_file, shard, 2)]})
        )
        port = free_port()
        log = (folder / "log").open("wb")
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        servers.append((process, f"http://127.0.0.1:{port}", folder))
    try:
        seen: dict[int, set[str]] = {}
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                for shard, (_, url, _) in enumerate(servers):
                    seen[shard] = {r["metric"]["instance"] for r in query(url, "trueconf_up == 1")}
            except OSError:
                pass
            if seen and set().union(*seen.values()) == expected:
                break
            time.sleep(0.5)  # the poll interval of this bounded wait
        logs = "\n".join((folder / "log").read_text(errors="replace")[-2000:] for _, _, folder in servers)
        assert seen and set().union(*seen.values()) == expected, (seen, expected, exporter.stderr, logs)
        assert not seen[0] & seen[1]  # every Room belongs to one shard only
        for shard, (_, url, _) in enumerate(servers):
            for series in query(url, "trueconf_up"):
                labels = series["metric"]
                assert labels["job"] == "trueconf-rooms"
                assert labels["site"] == (
                    "annex" if labels["instance"].endswith(tuple(f":{p.web}" for p in open_rooms)) else "hq"
                )
                assert series["value"][1] == "1", (shard, series)
            # the exporter's own metrics are not mixed into a Room's series
            assert query(url, "trueconf_exporter_build_info") == []
    finally:
        for process, _, _ in servers:
            process.terminate()
            process.wait(timeout=20)
