"""`allowed_targets` rules that cannot be fooled: IP entries match IP literals as addresses, name patterns
match names with a `*` that stays inside one label, and a name is allowed by IP entries only when every
address it has matches one, after which the collection connects to exactly those addresses.

The fast tier: name lookups go to a stand-in for getaddrinfo (never a real resolver). The same properties
through a real exporter process and a real (loopback) DNS server are in test_name_lookup.py.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.collect.collection import collect_room
from exporter.fleet.config import ConfigError, ExporterConfig, parse_config
from exporter.fleet.probe import (
    MAX_CHECK_LOOKUPS_IN_FLIGHT,
    TARGET_ERROR_CHARS,
    ProbeRefusedError,
    parse_query,
    resolve_probe,
)
from exporter.room import Reason, TargetError, parse_target
from exporter.room.connect import CheckedTarget, Resolver, ip_literal
from exporter.room.request import RoomRequest
from exporter.text import ECHO_CHARS, echo


def config(*entries: str, discovery: bool = False) -> ExporterConfig:
    document = {"modules": {"default": {"discovery": discovery}}, "allowed_targets": list(entries)}
    return parse_config(document, "config.yml", default_timeout=5.0)


def allows(entries: tuple[str, ...], target: str) -> bool:
    return config(*entries).allows(parse_target(target))


@pytest.mark.parametrize(
    ("entries", "target", "allowed"),
    [
        # IP patterns match IP literals only: a name made to look like one is a name.
        (("10.20.30.*",), "10.20.30.41", True),
        (("10.20.30.*",), "10.20.30.evil.test", False),
        (("10.20.30.*",), "10.20.31.1", False),
        (("10.20.*.*",), "10.20.255.1:9000", True),
        (("10.20.30.0/24",), "10.20.30.evil.test", False),
        # CIDRs, compared as addresses
        (("10.20.30.0/24",), "10.20.30.255", True),
        (("10.20.30.0/24",), "10.20.31.0", False),
        (("10.20.30.0/25",), "10.20.30.128", False),
        (("fd00::/64",), "[fd00::17]:8765", True),
        (("fd00::/64",), "[fd00:0:0:1::17]:8765", False),
        (("[fd00::/64]:8765",), "[fd00::17]:8765", True),
        (("[fd00::/64]:8765",), "[fd00::17]:8766", False),
        (("fd00::5",), "[FD00:0::5]", True),  # the same address, written otherwise
        (("10.0.0.5",), "[::ffff:10.0.0.5]", True),  # an IPv4-mapped IPv6 address is the IPv4 one
        (("10.0.0.0/8",), "[fd00::10.0.0.5]", False),
        (("0.0.0.0/0",), "203.0.113.9", True),
        (("0.0.0.0/0",), "[::1]", False),
        # ports
        (("10.0.0.5:8765",), "10.0.0.5", True),  # the default port of a ws target is 8765
        (("10.0.0.5:8765",), "10.0.0.5:8766", False),
        (("10.0.0.5:80",), "http://10.0.0.5", True),  # discovery: the web UI's port as written
        (("10.0.0.5",), "http://10.0.0.5:8080", True),
        # name patterns: '*' stays within one label; names only; case-insensitive
        (("room-*.example.org",), "ROOM-12.Example.ORG", True),
        (("room-*.example.org",), "room-.example.org", True),
        (("room-*.example.org",), "room-1.evil.example.org", False),
        (("room-*.example.org",), "room-1.example.org.evil.net", False),
        (("*.example.org",), "a.example.org", True),
        (("*.example.org",), "a.b.example.org", False),
        (("*.example.org",), "example.org", False),
        (("**.example.org",), "a.b.example.org", True),
        (("**.example.org",), "a.example.org", True),
        (("**.example.org",), "example.org", False),
        (("**.example.org",), "a.example.org.evil.net", False),
        (("room.example.org:8765",), "room.example.org", True),
        (("room.example.org:8765",), "room.example.org:1", False),
        (("room.example.org",), "room.example.org.", False),  # the trailing-dot spelling is another text
        (("0x*.1",), "0x7f.1", False),  # the resolver reads 0x7f.1 as 127.0.0.1: an address, not a name
        (("127.0x*",), "127.0x1", False),
        (("127.0.0.1",), "127.1", False),  # and not an IP literal either: allowed only by its lookup
        (("room-*",), "room-1", True),
        (("room-*",), "room-1.evil.net", False),
        (("10.0.0.5", "room.example.org"), "10.0.0.5.room.example.org", False),
    ],
)
def test_the_rules(entries, target, allowed):
    assert allows(entries, target) is allowed


LABEL = st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True)


@given(LABEL, LABEL)
def test_a_star_never_crosses_a_dot(first, second):
    assert allows(("*.example.org",), f"{first}.example.org")
    assert not allows(("*.example.org",), f"{first}.{second}.example.org")
    assert allows(("**.example.org",), f"{first}.{second}.example.org")
    assert not allows(("room-*.example.org",), f"room-{first}.{second}.example.org")


@given(st.tuples(*[st.integers(0, 255)] * 3), st.lists(LABEL, min_size=1, max_size=3))
def test_a_name_is_never_an_ip_entry_statically(octets, labels):
    name = ".".join([*map(str, octets), *labels])
    ip_like = ip_literal(name) is not None
    entries = (".".join(map(str, octets)) + ".*", ".".join(map(str, octets)) + ".0/24", "0.0.0.0/0")
    assert allows(entries, name) is ip_like


@given(st.ip_addresses(v=4), st.integers(0, 3))
def test_a_pattern_is_its_leading_octets(address, stars):
    octets = str(address).split(".")
    entry = ".".join(octets[: 4 - stars] + ["*"] * stars)
    other = ipaddress.IPv4Address(int(address) ^ (1 << (8 * stars)))  # one bit of the last fixed octet
    assert allows((entry,), str(address))
    assert not allows((entry,), str(other))


class FakeDns:
    """A stand-in for getaddrinfo: names map to IPv4 addresses, in turn for a name with several answers.

    An IP literal is passed to the real getaddrinfo (it parses, it asks no one); any other name not in the
    table fails, so no test here can reach a real resolver."""

    def __init__(self, names: dict[str, list[list[str]]]) -> None:
        self.names = names
        self.calls: Counter[str] = Counter()
        self.real = socket.getaddrinfo

    def __call__(self, host, port, *args, **kwargs):
        if (isinstance(host, str) and ip_literal(host) is not None) or host in (None, "localhost"):
            return self.real(host, port, *args, **kwargs)
        self.calls[host] += 1
        answers = self.names.get(host)
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = answers[min(self.calls[host], len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0)) for a in answer]


def probe(cfg: ExporterConfig, target: str, check_lookups: Resolver | None = None):
    """A probe's checks, by the resolver given or by one of the probe's own (the FakeDns answers both)."""
    lookups = check_lookups or Resolver(limit=MAX_CHECK_LOOKUPS_IN_FLIGHT)
    return resolve_probe(cfg, parse_query(f"target={target}"), lookups)


def test_a_name_is_allowed_by_ip_entries_only_when_every_address_matches(dns):
    fake = dns(
        {
            "inside.test": [["10.20.30.4", "10.20.30.5"]],
            "outside.test": [["192.0.2.1"]],
            "mixed.test": [["10.20.30.4", "192.0.2.1"]],
            "10.20.30.evil.test": [["192.0.2.66"]],
        }
    )
    cfg = config("10.20.30.0/24", "room-*.example.org")
    _, target = probe(cfg, "inside.test:8765")
    assert isinstance(target, CheckedTarget)
    assert [str(a) for a in target.lookup.addresses] == ["10.20.30.4", "10.20.30.5"]
    for name in ("outside.test", "mixed.test", "10.20.30.evil.test"):
        with pytest.raises(ProbeRefusedError) as caught:
            probe(cfg, name)
        assert caught.value.status == "403 Forbidden"
        assert "is not in allowed_targets, and neither are all its addresses" in caught.value.reason
        assert "192.0.2" not in caught.value.reason  # the answer does not reveal what a name resolves to
    assert fake.calls == Counter(
        {"inside.test": 1, "outside.test": 1, "mixed.test": 1, "10.20.30.evil.test": 1}
    )


def test_the_port_of_an_ip_entry_applies_to_a_names_addresses(dns):
    dns({"room.test": [["10.0.0.5"]]})
    cfg = config("10.0.0.5:8765")
    assert isinstance(probe(cfg, "room.test")[1], CheckedTarget)
    with pytest.raises(ProbeRefusedError):
        probe(cfg, "room.test:9000")


def test_a_name_allowed_by_a_name_pattern_or_a_list_without_ip_entries_is_not_looked_up_to_decide(dns):
    fake = dns({"room-1.example.org": [["192.0.2.1"]], "a.b.example.org": [["192.0.2.1"]]})
    _, target = probe(config("10.0.0.0/8", "room-*.example.org"), "room-1.example.org")
    assert not isinstance(target, CheckedTarget)  # its collection looks it up, once, within its deadline
    with pytest.raises(ProbeRefusedError):
        probe(config("*.example.org"), "a.b.example.org")
    assert fake.calls == Counter()


@pytest.mark.loopback  # the collection's SessionPool wakes its reader through a socketpair
def test_a_lookup_that_fails_is_the_collections_failure_with_no_connection(dns):
    dns({})
    _, target = probe(config("127.0.0.0/8"), "nowhere.test")
    assert isinstance(target, CheckedTarget) and target.lookup.addresses == ()
    collection = collect_room(RoomRequest(target, None), 2.0)
    assert collection.error is not None and collection.error.reason is Reason.CONNECT
    assert "cannot resolve nowhere.test" in collection.error.message


def listener(host: str, port: int) -> socket.socket:
    sock = socket.create_server((host, port))
    sock.settimeout(0.3)
    return sock


def never_contacted(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with pytest.raises(TimeoutError):
            sock.accept()
        sock.close()


@pytest.mark.parametrize("entries", [("127.0.0.1",), ("*.rooms.test",)])
def test_discovery_and_websocket_both_go_to_the_one_checked_address(room, dns, entries):
    """A name whose answer changes after the first lookup (DNS rebinding): the collection looks it up once
    (in /probe for IP entries, in the collection for a name pattern) and both of its connections, config.json
    and the WebSocket, go to that first answer; nothing reaches the second."""
    ports = room("doc-example").ports
    elsewhere = [listener("127.0.0.2", ports.web), listener("127.0.0.2", ports.websocket)]
    fake = dns({"rebind.rooms.test": [["127.0.0.1"], ["127.0.0.2"]]})
    _, target = probe(config(*entries, discovery=True), f"rebind.rooms.test:{ports.web}")
    assert isinstance(target, CheckedTarget) is (entries == ("127.0.0.1",))
    collection = collect_room(RoomRequest(target, None), 5.0)
    assert collection.up, collection.error
    assert fake.calls["rebind.rooms.test"] == 1
    never_contacted(elsewhere)


@pytest.mark.loopback  # the collection's SessionPool wakes its reader through a socketpair
def test_a_probe_and_its_collection_share_one_deadline(dns):
    """The deadline of a CheckedTarget's collection counts from the start of the probe's lookup."""
    dns({"room.test": [["127.0.0.1"]]})
    _, target = probe(config("127.0.0.1:1"), "room.test:1")
    assert isinstance(target, CheckedTarget)
    ten_seconds_ago = replace(target.lookup, started=target.lookup.started - 10)
    collection = collect_room(RoomRequest(replace(target, lookup=ten_seconds_ago), None), 5.0)
    assert collection.error is not None and collection.error.reason is Reason.TIMEOUT
    assert collection.duration_seconds >= 10


def test_an_ip_literal_target_is_never_looked_up(room, dns):
    port = room("doc-example").ports.websocket
    fake = dns({})
    _, target = probe(config("127.0.0.0/30"), f"127.0.0.1:{port}")
    assert collect_room(RoomRequest(target, None), 5.0).up
    with pytest.raises(ProbeRefusedError):
        probe(config("127.0.0.0/30"), f"127.0.0.4:{port}")
    assert fake.calls == Counter()


def test_checks_of_names_against_ip_entries_cannot_hold_up_collections_lookups(room, dns):
    """Any caller can make /probe look a name up: slow names fill the checks' own places (here 2), and a
    Room allowed by a name pattern is still looked up and collected at once."""
    released = threading.Event()
    entered = threading.Semaphore(0)

    def stuck(*_: object) -> list[tuple[object, ...]]:
        entered.release()
        released.wait(timeout=10)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    check_lookups = Resolver(limit=2, getaddrinfo=stuck)
    port = room("doc-example").ports.websocket
    fake = dns({"room-1.example.org": [["127.0.0.1"]]})
    cfg = config("10.0.0.0/8", "room-*.example.org")
    try:
        stuck_probes = [
            threading.Thread(target=probe, args=(cfg, f"slow-{i}.evil.test", check_lookups), daemon=True)
            for i in range(2)
        ]
        for thread in stuck_probes:
            thread.start()
        assert entered.acquire(timeout=5) and entered.acquire(timeout=5), "both checks' places are taken"
        query = parse_query("target=slow-3.evil.test")
        _, third = resolve_probe(cfg, query, check_lookups, deadline_seconds=lambda _: 0.2)
        assert isinstance(third, CheckedTarget) and third.lookup.error is not None
        assert "could not start in time" in third.lookup.error.message
        started = time.monotonic()
        _, target = probe(cfg, f"room-1.example.org:{port}")
        assert collect_room(RoomRequest(target, None), 5.0).up
        assert time.monotonic() - started < 1.0
        assert fake.calls["room-1.example.org"] == 1
    finally:
        released.set()


def test_a_probes_refusal_quotes_the_clients_value_cut_by_echo():
    """The module name and the target a client sent come back quoted by text.echo, cut at ECHO_CHARS."""
    cfg = config("10.0.0.0/8")
    lookups = Resolver(limit=MAX_CHECK_LOOKUPS_IN_FLIGHT)
    quoted = {
        "m" * ECHO_CHARS: f"'{'m' * ECHO_CHARS}'",
        "m" * (ECHO_CHARS + 1): f"'{'m' * ECHO_CHARS}...'",
        "m\x1bm": "'m\\x1bm'",
    }
    for name, shown in quoted.items():
        with pytest.raises(ProbeRefusedError) as refused:
            resolve_probe(cfg, {"target": ["10.0.0.1"], "module": [name]}, lookups)
        assert refused.value.reason.startswith(f"unknown module {shown}; ")
    long_name = "a" * 200 + ".test"
    with pytest.raises(ProbeRefusedError) as refused:
        probe(config("rooms.example.org"), long_name)  # a list of names only: no lookup to decide
    assert refused.value.reason == f"target {echo(f'ws://{long_name}:8765')} is not in allowed_targets"
    assert f"'ws://{'a' * (ECHO_CHARS - len('ws://'))}...'" in refused.value.reason
    long_path = "192.0.2.1/" + "p" * 1000
    with pytest.raises(TargetError) as parsed:
        parse_target(long_path)
    with pytest.raises(ProbeRefusedError) as refused:
        probe(cfg, long_path)
    assert refused.value.reason == f"bad target: {echo(str(parsed.value), TARGET_ERROR_CHARS)}"
    assert len(refused.value.reason) == len("bad target: ''...") + TARGET_ERROR_CHARS


def test_a_bad_allow_list_entry_is_quoted_cut_by_echo():
    entry = "  " + "a" * ECHO_CHARS + "/x  "
    with pytest.raises(ConfigError) as refused:
        config(entry)
    assert f"{echo(entry.strip())} has a scheme or path" in str(refused.value)
    assert "a" * ECHO_CHARS + "..." in str(refused.value) and "/x" not in str(refused.value)
