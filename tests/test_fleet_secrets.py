"""Multi-target mode keeps every PIN secret, and logs one line per failed probe.

No PIN in a log line (debug level, both formats), a page, a metric, an error answer, a reload message or
a warning about modules whose PINs could reach the same Room.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.processes import http_get

pytestmark = pytest.mark.process

FILE_PIN = "31415926"
ENV_PIN = "27182818"
INLINE_PIN = "16180339"
SECRET_FILE_PIN = "14142135"


def post(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=b"", method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_no_pin_appears_anywhere_in_multi_target_mode(processes, room, tmp_path, log_format):
    (tmp_path / "pin").write_text(FILE_PIN)
    (tmp_path / "secret").write_text(SECRET_FILE_PIN)
    rooms = {
        name: room("doc-example", pin=pin).ports.websocket
        for name, pin in (
            ("from-file", FILE_PIN),
            ("from-env", ENV_PIN),
            ("inline", INLINE_PIN),
            ("from-secret-file", SECRET_FILE_PIN),
        )
    }
    wrong_room = room("doc-example", pin="99999999").ports.websocket
    sources = {
        "from-file": "pin_file: pin",
        "from-env": "pin_env: ROOM_PIN",
        "from-secret-file": "pin_env: OTHER_PIN",
        "inline": f"pin: '{INLINE_PIN}'",
    }
    config = tmp_path / "config.yml"
    config.write_text(
        "modules:\n"
        + "".join(
            f"  {name}:\n    {source}\n"
            f"    allowed_targets: ['127.0.0.1:{rooms[name]}', '127.0.0.1:{wrong_room}']\n"
            for name, source in sources.items()
        )
        + "allowed_targets: [127.0.0.1]\n"
    )
    exporter = processes["exporter"](
        "--config.file",
        str(config),
        "--log.level",
        "debug",
        "--log.format",
        log_format,
        env={"ROOM_PIN": ENV_PIN, "OTHER_PIN_FILE": str(tmp_path / "secret")},
    )
    base = f"http://127.0.0.1:{exporter.ports['http']}"
    seen = []
    for module, port in rooms.items():
        status, _, body = http_get(f"{base}/probe?target=127.0.0.1:{port}&module={module}")
        assert status == 200 and b"trueconf_up 1.0" in body, (module, body)
        seen.append(body.decode())
    for module in rooms:  # every module's PIN sent to a Room that refuses it: a logged failure each
        body = http_get(f"{base}/probe?target=127.0.0.1:{wrong_room}&module={module}")[2].decode()
        assert 'trueconf_scrape_error{reason="auth"} 1.0' in body
        seen.append(body)
    status, _, body = http_get(f"{base}/probe?target=127.0.0.1:{rooms['from-file']}&module=inline")
    assert status == 403 and b"the allowed_targets of module 'inline'" in body  # outside its own list
    seen.append(body.decode())
    page = http_get(f"{base}/")[2].decode()
    assert page.count(", 2 allowed targets of its own</li>") == 4  # the status page: each module is scoped
    seen.append(page)
    for path in (
        "/metrics",
        "/healthz",
        "/probe",
        "/probe?target=10.0.0.1",
        "/probe?target=x&module=y",
        "/probe?target=ws://h/p",
    ):
        seen.append(http_get(base + path)[2].decode())
    config.write_text(config.read_text() + f"  broken:\n    pin: '{INLINE_PIN}'\n    timeout: never\n")
    status, body = post(f"{base}/-/reload")
    assert status == 500
    seen.append(body.decode())
    exporter.stop()
    seen.append(exporter.stdout)
    logs = exporter.stderr
    seen.append(logs)

    everything = "\n".join(seen)
    for pin in (FILE_PIN, ENV_PIN, INLINE_PIN, SECRET_FILE_PIN):
        assert pin not in everything
    assert "PIN is written into the config file" in logs  # the inline PIN was warned about, without the PIN
    overlaps = [line for line in logs.splitlines() if "a Room there can be sent either PIN" in line]
    assert len(overlaps) == 6  # each pair of the four PINs shares the wrong Room: warned, without a PIN
    assert all(f"127.0.0.1:{wrong_room}" in line for line in overlaps)

    failures = [line for line in logs.splitlines() if "collection failed" in line]
    assert len(failures) == len(rooms)  # one line per failed probe
    for line in failures:
        if log_format == "json":
            fields = json.loads(line)
            assert fields["level"] == "warning" and fields["reason"] == "auth"
            assert fields["target"] == f"ws://127.0.0.1:{wrong_room}"
        else:
            assert "level=warning" in line and "reason=auth" in line
            assert f"target=ws://127.0.0.1:{wrong_room}" in line


def test_config_and_web_config_files_come_from_environment_variables(processes, room, tmp_path):
    (tmp_path / "config.yml").write_text("modules:\n  default: {}\nallowed_targets: [127.0.0.1]\n")
    (tmp_path / "web.yml").write_text("healthz_without_auth: false\n")
    exporter = processes["exporter"](
        env={
            "TRUECONF_EXPORTER_CONFIG_FILE": str(tmp_path / "config.yml"),
            "TRUECONF_EXPORTER_WEB_CONFIG_FILE": str(tmp_path / "web.yml"),
        }
    )
    port = room("doc-example").ports.websocket
    status, _, body = http_get(f"http://127.0.0.1:{exporter.ports['http']}/probe?target=127.0.0.1:{port}")
    assert status == 200 and b"trueconf_up 1.0" in body


def test_single_target_flags_are_ignored_with_a_warning_in_multi_target_mode(processes, tmp_path):
    (tmp_path / "config.yml").write_text("modules:\n  default: {}\n")
    exporter = processes["exporter"](
        "--config.file", str(tmp_path / "config.yml"), "--target", "ws://10.9.9.9:1"
    )
    assert "ignored with --config.file" in exporter.stderr and "--target" in exporter.stderr
    status, _, body = http_get(f"http://127.0.0.1:{exporter.ports['http']}/metrics")
    assert status == 200 and b"trueconf_up" not in body


def test_serve_warns_of_a_pin_module_with_no_list_at_all_and_only_of_it(processes, tmp_path):
    """The start-up warning names the PIN modules /probe would send anywhere; a module scoped by its own
    list, with no top-level list, is not one of them."""
    (tmp_path / "pin").write_text(FILE_PIN)
    (tmp_path / "other").write_text(SECRET_FILE_PIN)
    unscoped = tmp_path / "unscoped.yml"
    unscoped.write_text("modules:\n  default:\n    pin_file: pin\n  open: {}\n")
    logs = processes["exporter"]("--config.file", str(unscoped)).stderr
    [line] = [line for line in logs.splitlines() if "no allowed_targets" in line]
    assert 'detail="modules default"' in line
    scoped = tmp_path / "scoped.yml"
    scoped.write_text(
        "modules:\n  default:\n    pin_file: pin\n    allowed_targets: [127.0.0.1]\n"
        "  other:\n    pin_file: other\n    allowed_targets: [127.0.0.2]\n"
    )
    logs = processes["exporter"]("--config.file", str(scoped)).stderr
    assert "no allowed_targets" not in logs and "either PIN" not in logs
