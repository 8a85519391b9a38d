"""Host names through a real exporter process and a real DNS server, both on loopback.

The exporter runs in a private mount namespace whose /etc/hosts, /etc/resolv.conf and /etc/nsswitch.conf
send every lookup to a LoopbackDns started by the test (tests/loopback_dns.py): no lookup reaches the
machine's resolver. Shown here: names made to look like IP patterns refused with no connection, CIDR
entries, name patterns that do not cross dots, names whose addresses fall outside the IP entries refused, one
lookup per probe whose addresses every connection uses (DNS rebinding gets nowhere), a lookup bounded by the
probe's deadline, and sixteen slow-resolving probes that do not delay a fast one.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.exposition import value
from tests.loopback_dns import Answer, LoopbackDns, start_namespaced_exporter
from tests.processes import Process, http_get, wait_until

pytestmark = pytest.mark.process  # needs root (unshare -m, bind mounts), as CI runs: fails, never skips

HOSTS = "127.0.0.1 localhost\n"


def dns_address() -> str:
    """A loopback address of its own for each test's DNS server, so one still closing never answers."""
    return f"127.53.{random.randrange(1, 255)}.{random.randrange(1, 255)}"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Callable[..., tuple[str, LoopbackDns]]]:
    """Start a LoopbackDns with `names` and an exporter in a namespace using it with `config_text`."""
    started: list[tuple[Process, LoopbackDns]] = []

    def start(
        config_text: str, names: dict[str, Answer], lifetime: float = 60.0, dns_timeout: int = 5
    ) -> tuple[str, LoopbackDns]:
        dns = LoopbackDns(dns_address(), dict(names), lifetime_seconds=lifetime).__enter__()
        (tmp_path / "config.yml").write_text(config_text)
        exporter = start_namespaced_exporter(
            tmp_path, HOSTS, dns.resolv_conf(dns_timeout), "--config.file", str(tmp_path / "config.yml")
        )
        started.append((exporter, dns))
        return f"http://127.0.0.1:{exporter.ports['http']}", dns

    yield start
    for exporter, dns in started:
        exporter.stop()
        dns.__exit__(None, None, None)


def probe(base: str, target: str, module: str = "default") -> tuple[int, str]:
    status, _, body = http_get(f"{base}/probe?target={quote(target)}&module={module}")
    return status, body.decode()


def listeners(host: str, *ports: int) -> list[socket.socket]:
    """Listening sockets that must never see a connection."""
    found = []
    for port in ports:
        sock = socket.create_server((host, port))
        sock.settimeout(0.3)
        found.append(sock)
    return found


def assert_never_contacted(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with pytest.raises(TimeoutError):
            sock.accept()
        sock.close()


CONFIG = """
modules:
  default:
    timeout: 5s
  discover:
    discovery: true
  quick:
    timeout: 1s
allowed_targets: [{entries}]
"""


def test_a_name_shaped_like_an_ip_pattern_is_refused_without_a_connection(room, fleet):
    """The README's old example: `10.20.30.*` let `10.20.30.evil.test` through, PIN and all."""
    port = room("doc-example").ports.websocket
    base, dns = fleet(
        CONFIG.format(entries='"10.20.30.*", "127.0.0.1"'), {"10.20.30.evil.test": Answer(("127.0.0.2",))}
    )
    evil = listeners("127.0.0.2", port)
    status, body = probe(base, f"10.20.30.evil.test:{port}")
    assert status == 403, body
    assert "is not in allowed_targets" in body and "127.0.0.2" not in body
    assert_never_contacted(evil)
    assert dns.lookups("10.20.30.evil.test") == 1  # looked up to check its addresses, once


def test_cidr_entries(room, fleet):
    port = room("doc-example").ports.websocket
    base, dns = fleet(CONFIG.format(entries='"127.0.0.0/30"'), {})
    outside = listeners("127.0.0.4", port)
    status, body = probe(base, f"127.0.0.1:{port}")
    assert status == 200 and value(body, "trueconf_up") == 1
    assert probe(base, f"127.0.0.4:{port}")[0] == 403
    assert_never_contacted(outside)
    assert dns.queries == []  # IP literals never reach the resolver


def test_name_patterns_do_not_cross_dots(room, fleet):
    port = room("doc-example").ports.websocket
    names = {"room.rooms.test": Answer(("127.0.0.1",)), "room.evil.rooms.test": Answer(("127.0.0.2",))}
    base, dns = fleet(CONFIG.format(entries='"*.rooms.test"'), names)
    evil = listeners("127.0.0.2", port)
    status, body = probe(base, f"room.rooms.test:{port}")
    assert status == 200 and value(body, "trueconf_up") == 1
    assert probe(base, f"room.evil.rooms.test:{port}")[0] == 403
    assert_never_contacted(evil)
    assert dns.lookups("room.evil.rooms.test") == 0  # no IP entries: nothing to look up for the decision
    assert dns.lookups("room.rooms.test") == 1


def test_a_name_is_allowed_by_ip_entries_only_if_all_its_addresses_are(room, fleet):
    port = room("doc-example").ports.websocket
    names = {
        "inside.rooms.test": Answer(("127.0.0.1",)),
        "outside.rooms.test": Answer(("127.0.0.2",)),
        "mixed.rooms.test": Answer(("127.0.0.1", "127.0.0.2")),
    }
    base, dns = fleet(CONFIG.format(entries='"127.0.0.1"'), names)
    outside = listeners("127.0.0.2", port)
    status, body = probe(base, f"inside.rooms.test:{port}")
    assert status == 200 and value(body, "trueconf_up") == 1
    for name in ("outside.rooms.test", "mixed.rooms.test"):
        status, body = probe(base, f"{name}:{port}")
        assert status == 403 and "neither are all its addresses" in body, body
    assert_never_contacted(outside)
    assert dns.lookups("inside.rooms.test") == 1  # checked once; the collection used that answer


@pytest.mark.parametrize("entries", ['"127.0.0.1"', '"*.rooms.test"'])
def test_one_lookup_per_probe_and_every_connection_goes_to_its_answer(room, fleet, entries):
    """DNS rebinding: the name's first answer is allowed, every later one points elsewhere. A discovery
    probe opens two connections (config.json, then the WebSocket): both go to the first answer, and the
    DNS server sees one A query per probe, whether the name was allowed by its address or by its name."""
    ports = room("doc-example").ports

    def rebinding(before: int) -> Answer:
        return Answer(("127.0.0.1",) if before == 0 else ("127.0.0.2",))

    base, dns = fleet(CONFIG.format(entries=entries), {"rebind.rooms.test": rebinding})
    elsewhere = listeners("127.0.0.2", ports.web, ports.websocket)
    status, body = probe(base, f"rebind.rooms.test:{ports.web}", module="discover")
    assert status == 200 and value(body, "trueconf_up") == 1, body
    assert dns.lookups("rebind.rooms.test") == 1
    assert_never_contacted(elsewhere)


def test_a_slow_lookup_is_bounded_by_the_probes_one_deadline(fleet):
    """A name looked up to check its addresses, whose DNS answer would take 3 s: the probe (timeout 1 s)
    answers at its deadline with trueconf_up 0, reason timeout, lookup and collection sharing that second."""
    base, _ = fleet(
        CONFIG.format(entries='"127.0.0.1"'), {"slow.rooms.test": Answer(("127.0.0.1",), 3.0)}, dns_timeout=5
    )
    started = time.monotonic()
    status, body = probe(base, "slow.rooms.test:8765", module="quick")
    elapsed = time.monotonic() - started
    print(f"probe of a name whose lookup takes 3 s, timeout 1 s: answered in {elapsed:.2f} s")
    assert status == 200
    assert value(body, "trueconf_up") == 0 and value(body, "trueconf_scrape_error", reason="timeout") == 1
    assert 0.9 < elapsed < 1.8
    assert 0.9 < value(body, "trueconf_scrape_duration_seconds") < 1.5


def test_sixteen_slow_lookups_do_not_delay_a_fast_one(room, fleet):
    """Sixteen probes of names whose DNS answers take 6 s (each probe gives up at its 2 s deadline), then
    a probe of a name answered at once. Before lookups had a thread each, the sixteen filled a shared pool
    of 8 and the fast probe waited behind them until its own 5 s deadline: trueconf_up 0 after 5.0 s."""
    port = room("doc-example").ports.websocket
    names = {f"slow-{i}.rooms.test": Answer(("127.0.0.1",), 6.0) for i in range(16)}
    names["fast.rooms.test"] = Answer(("127.0.0.1",))
    config = CONFIG.replace("  quick:\n    timeout: 1s", "  slow:\n    timeout: 2s")
    base, dns = fleet(config.format(entries='"*.rooms.test"'), names, dns_timeout=8)

    started = time.monotonic()
    status, body = probe(base, f"fast.rooms.test:{port}")
    alone = time.monotonic() - started
    assert status == 200 and value(body, "trueconf_up") == 1

    slow_results: dict[int, tuple[float, int, str]] = {}

    def slow_probe(index: int) -> None:
        began = time.monotonic()
        status, body = probe(base, f"slow-{index}.rooms.test:{port}", module="slow")
        slow_results[index] = (time.monotonic() - began, status, body)

    threads = [threading.Thread(target=slow_probe, args=(i,), daemon=True) for i in range(16)]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: sum(dns.lookups(f"slow-{i}.rooms.test") for i in range(16)) >= 16, 5), (
        "every slow lookup has reached the DNS server"
    )
    started = time.monotonic()
    status, body = probe(base, f"fast.rooms.test:{port}")
    beside_slow = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=15)
    slow_times = sorted(round(result[0], 2) for result in slow_results.values())
    print(
        f"fast name-based probe: alone {alone * 1000:.0f} ms, beside 16 slow lookups "
        f"{beside_slow * 1000:.0f} ms; the 16 slow probes answered after {slow_times} s"
    )
    assert status == 200 and value(body, "trueconf_up") == 1, body
    assert beside_slow < 1.0
    assert len(slow_results) == 16
    for elapsed, status, body in slow_results.values():
        assert status == 200 and value(body, "trueconf_scrape_error", reason="timeout") == 1
        assert elapsed < 3.0  # their own 2 s deadline, not the 6 s lookup


def test_probes_of_one_slow_name_share_one_lookup(room, fleet):
    port = room("doc-example").ports.websocket
    base, dns = fleet(
        CONFIG.format(entries='"*.rooms.test"'), {"busy.rooms.test": Answer(("127.0.0.1",), 1.0)}
    )
    results: list[tuple[int, str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(probe(base, f"busy.rooms.test:{port}")), daemon=True)
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert [status for status, _ in results] == [200] * 8
    assert all(value(body, "trueconf_up") == 1 for _, body in results)
    assert dns.lookups("busy.rooms.test") == 1
