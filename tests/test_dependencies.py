"""The declared dependencies as users meet them: websocket-client's private hook checked once at start-up, and
the emulator's server library an optional extra that the exporter itself never needs.

Each case runs the real command with a `sitecustomize` module on PYTHONPATH that changes the installed
libraries the way a user's machine might differ: a websocket-client whose frame buffer lost a method, or no
`websockets` at all.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from exporter.room.frames import SUPPORTED_WEBSOCKET_CLIENT, check_websocket_client
from tests.test_cli import run

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent

BROKEN_FRAME_BUFFER = """
import websocket._abnf
del websocket._abnf.frame_buffer.recv_length
"""

NO_WEBSOCKETS = """
import sys

class NoWebsockets:
    def find_spec(self, name, path=None, target=None):
        if name == "websockets" or name.startswith("websockets."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoWebsockets())
"""


def run_with(tmp_path: Path, sitecustomize: str, *args: str) -> subprocess.CompletedProcess[str]:
    folder = tmp_path / "site"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(sitecustomize)
    return run(*args, env={"PYTHONPATH": str(folder)}, timeout=30)


def test_the_hook_check_passes_on_the_installed_release():
    check_websocket_client()


def test_the_supported_range_is_the_declared_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = next(d for d in project["dependencies"] if d.startswith("websocket-client"))
    assert declared == f"websocket-client{SUPPORTED_WEBSOCKET_CLIENT}"


@pytest.mark.parametrize("command", ["check", "serve"])
def test_an_unusable_websocket_client_fails_at_start_up_in_one_line(tmp_path, command):
    result = run_with(tmp_path, BROKEN_FRAME_BUFFER, command, "--target", "127.0.0.1:1")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "websocket-client" in line]
    assert line.startswith("Error: websocket-client ")
    assert f"install websocket-client{SUPPORTED_WEBSOCKET_CLIENT}" in line


@pytest.mark.parametrize(
    "args",
    [["demo", "--web.listen-address", "127.0.0.1:0"], ["emulate", "--port", "0"]],
    ids=["demo", "emulate"],
)
def test_the_emulator_without_its_extra_says_how_to_get_it(tmp_path, args):
    result = run_with(tmp_path, NO_WEBSOCKETS, *args)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: the emulator needs the 'websockets' package: pip install 'trueconf-exporter[emulator]' "
        "(in a checkout: pip install '.[emulator]'; make run does this for you)"
    ]


def test_the_exporter_reads_a_room_without_the_emulator_extra(tmp_path, room):
    emulator = room("doc-example")
    result = run_with(tmp_path, NO_WEBSOCKETS, "check", "--target", f"127.0.0.1:{emulator.ports.websocket}")
    assert result.returncode == 0, result.stderr
    assert "trueconf_up 1.0" in result.stdout


def test_help_works_without_the_emulator_extra(tmp_path):
    result = run_with(tmp_path, NO_WEBSOCKETS, "emulate", "--help")
    assert result.returncode == 0
    assert "--fault" in result.stdout


def test_the_image_installs_no_extra():
    """The container carries one WebSocket library: the Dockerfile installs the wheel without extras."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir --compile /tmp/wheels/*.whl" in dockerfile
    assert "[emulator]" not in dockerfile


def test_the_lowest_pins_cover_every_runtime_dependency():
    result = subprocess.run(
        [sys.executable, "scripts/lowest_requirements.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    pins = {line.split("==")[0].lower() for line in result.stdout.split()}
    assert pins == {"prometheus-client", "websocket-client", "click", "pyyaml", "bcrypt", "h11", "websockets"}
