"""Shared fixtures: emulated Rooms (in-process or as real processes) and a real exporter process."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from exporter.emulator.living import LivingRoom
from exporter.emulator.scenario import Scenario, load_scenario
from exporter.emulator.server import EmulatedRoom, EmulatorSettings, RunningEmulator
from exporter.web.app import ExporterApp
from exporter.web.server import make_http_server
from tests.processes import Process, start_emulator, start_exporter
from tests.test_allow_list import FakeDns

FIXTURES = Path(__file__).parent / "fixtures"

settings.register_profile("full", max_examples=150)
settings.register_profile("fast", max_examples=25)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "full"))
"""`make test-fast` sets HYPOTHESIS_PROFILE=fast: fewer examples per property, the same properties."""


LOOPBACK_FIXTURES = {"room", "serve_app", "room_sending"}
"""Fixtures that serve emulated Rooms, raw Rooms or an exporter on loopback sockets: `loopback` tests."""

SLOW_TIERS = ("loopback", "process", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts real processes is a `process` test, one that opens sockets in this process a
    `loopback` test, wherever it stands; the rest are the fast unit tier."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "processes" in fixtures:
            item.add_marker(pytest.mark.process)
        if fixtures & LOOPBACK_FIXTURES:
            item.add_marker(pytest.mark.loopback)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A report's captured text with a lone surrogate (tests feed the exporter hostile text) written as an
    escape: pytest-xdist's workers send reports as UTF-8, which cannot carry one."""
    outcome = yield
    report = outcome.get_result()
    report.sections = [(name, _utf8_safe(content)) for name, content in report.sections]


def _utf8_safe(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


class FastTierSocket(RuntimeError):
    """A test of the fast tier tried to open a socket or to ask a real resolver."""


FAST_TIER_SOCKET = "the fast tier opens no sockets: mark this test loopback"


@pytest.fixture(autouse=True)
def no_sockets_in_the_fast_tier(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A test marked neither loopback, process nor e2e creates no socket and asks no real resolver, from any
    thread: every socket is built through socket.socket (socketpair, create_connection, create_server and
    accept included), so building one raises; connect, bind and listen raise too, for a socket made before
    the test. The test fails at teardown even where the code under test caught the error."""
    if any(request.node.get_closest_marker(tier) for tier in SLOW_TIERS):
        yield
        return
    tried: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            tried.append(what)
            raise FastTierSocket(f"{FAST_TIER_SOCKET} ({what})")

        return refused

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        """An IP literal is parsed, not looked up; a name would ask the system's resolver (the `dns`
        fixture answers names from a table)."""
        if host is not None and not is_ip_literal(host.decode() if isinstance(host, bytes) else host):
            return refuse(f"socket.getaddrinfo({host!r})")()
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "__init__", refuse("socket.socket"))
    monkeypatch.setattr(socket, "socketpair", refuse("socket.socketpair"))
    for method in ("connect", "connect_ex", "bind", "listen"):
        monkeypatch.setattr(socket.socket, method, refuse(f"socket.{method}"))
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    if tried:
        pytest.fail(f"{FAST_TIER_SOCKET}: it tried {', '.join(sorted(set(tried)))}", pytrace=False)


@pytest.fixture
def room() -> Iterator[Callable[..., RunningEmulator]]:
    """Start in-process emulated Rooms on free loopback ports: `room(scenario, living=None, **fields)`,
    fields being any EmulatorSettings field (pin=..., fault=..., slow_reply_seconds=...).

    Each is a RunningEmulator: `.restart()` drops its connections, `.logins` counts the `auth` requests."""
    started: list[RunningEmulator] = []

    def make(
        scenario: Scenario | str = "doc-example", living: LivingRoom | None = None, **fields: Any
    ) -> RunningEmulator:
        if isinstance(scenario, str):
            scenario = load_scenario(scenario)
        room = EmulatedRoom(EmulatorSettings(websocket_port=0, web_port=0, **fields), scenario, living)
        emulator = RunningEmulator(room)
        emulator.start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def serve_app() -> Iterator[Callable[[ExporterApp], str]]:
    """Serve an ExporterApp with the real HTTP server on a free loopback port, in this process.

    `serve_app(app)` returns the base URL; every server is shut down at the end of the test."""
    servers = []
    apps = []

    def serve(app: ExporterApp) -> str:
        server = make_http_server(app, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        apps.append(app)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()
    for app in apps:  # before the emulated Rooms stop, which would wait for the open sessions
        app.sessions.close_all()


@pytest.fixture
def scenario_file(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Write a scenario document to a file and return its path."""

    def write(document: dict[str, Any]) -> Path:
        path = tmp_path / f"scenario-{len(list(tmp_path.glob('scenario-*')))}.json"
        path.write_text(json.dumps(document))
        return path

    return write


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[dict[str, Callable[..., Process]]]:
    """Start real `emulate` and `serve` processes; all are stopped at the end of the test."""
    started: list[Process] = []

    def emulator(*args: str, **kwargs: Any) -> Process:
        process = start_emulator(tmp_path, *args, **kwargs)
        started.append(process)
        return process

    def exporter(*args: str, **kwargs: Any) -> Process:
        process = start_exporter(tmp_path, *args, **kwargs)
        started.append(process)
        return process

    yield {"emulator": emulator, "exporter": exporter}
    for process in started:
        process.stop()


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[list[str]]]], FakeDns]:
    """getaddrinfo answered from a table (test_allow_list's FakeDns): no real resolver is ever asked."""

    def install(names: dict[str, list[list[str]]]) -> FakeDns:
        fake = FakeDns(names)
        monkeypatch.setattr(socket, "getaddrinfo", fake)
        return fake

    return install
