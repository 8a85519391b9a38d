"""`--config.file`: one fixture per kind of mistake, first line says what the message must contain."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import quote

import click
import pytest
import yaml

from exporter.cli.options import DurationType
from exporter.fleet.config import ConfigError, ExporterConfig, load_config, parse_config, parse_duration
from exporter.fleet.probe import ProbeRefusedError, parse_query, resolve_probe
from exporter.room import parse_target
from exporter.room.connect import Resolver
from tests.test_cli import run


def probe_allowed(config: ExporterConfig, module: str, target: str) -> bool:
    """Whether /probe?target=TARGET&module=MODULE passes the allow-lists, the fleet's and the module's."""
    query = parse_query(f"target={quote(target)}&module={quote(module)}")
    try:
        resolve_probe(config, query, Resolver())
    except ProbeRefusedError:
        return False
    return True


CONFIG_FIXTURES = Path(__file__).parent / "fixtures" / "config"
MISTAKES = sorted(p for p in CONFIG_FIXTURES.glob("*.yml") if p.name != "valid.yml")
INLINE_PIN = "90817263"
"""The PIN some broken fixtures hold; no message may repeat it."""


def expectation(path: Path) -> str:
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# expect: "), f"{path.name} must start with '# expect: <message part>'"
    return first_line.removeprefix("# expect: ")


def test_there_is_a_fixture_for_each_kind_of_mistake():
    assert len(MISTAKES) >= 35


@pytest.mark.parametrize("path", MISTAKES, ids=[p.stem for p in MISTAKES])
def test_each_mistake_is_named_with_file_key_and_problem(path, monkeypatch):
    monkeypatch.delenv("TRUECONF_TEST_UNSET_PIN", raising=False)
    monkeypatch.delenv("TRUECONF_TEST_UNSET_PIN_FILE", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config(path, default_timeout=5.0)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert expectation(path) in message, message
    assert "\n" not in message
    assert INLINE_PIN not in message


@pytest.mark.parametrize(
    "name",
    ["not-yaml", "unknown-module-key", "timeout-out-of-range", "allowed-target-with-scheme", "pins-unscoped"],
)
def test_serve_refuses_to_start_with_a_broken_config(name):
    path = CONFIG_FIXTURES / f"{name}.yml"
    result = run("serve", "--web.listen-address", "127.0.0.1:0", "--config.file", str(path), timeout=20)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"invalid --config.file: {path}: {expectation(path)}" in result.stderr
    assert "Traceback" not in result.stderr
    assert INLINE_PIN not in result.stderr + result.stdout


def test_a_missing_config_file_is_a_clear_start_up_error(tmp_path):
    result = run("serve", "--config.file", str(tmp_path / "nope.yml"), timeout=20)
    assert result.returncode == 2
    assert f"invalid --config.file: {tmp_path / 'nope.yml'}: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_valid_fixture(monkeypatch):
    monkeypatch.setenv("TRUECONF_TEST_LOBBY_PIN", " 2222 ")
    config = load_config(CONFIG_FIXTURES / "valid.yml", default_timeout=5.0)
    assert set(config.modules) == {"default", "lobby", "open-rooms"}
    default, lobby, open_rooms = (config.modules[n] for n in ("default", "lobby", "open-rooms"))
    assert (default.pin, default.pin_source, default.timeout_seconds, default.discovery) == (
        "4815",
        "pin_file",
        2.5,
        False,
    )
    assert (lobby.pin, lobby.pin_source, lobby.timeout_seconds, lobby.discovery) == (
        "2222",
        "pin_env",
        0.5,
        True,
    )
    assert (open_rooms.pin, open_rooms.timeout_seconds) == (None, 5.0)  # --timeout is the default
    assert (lobby.sessions, lobby.collectors) == (False, (("incoming", False), ("system_info", True)))
    assert (default.sessions, default.collectors) == (None, ())  # as serve's flags say
    assert "4815" not in repr(default) and "2222" not in repr(config)
    assert default.allow_list is not None and lobby.allow_list is not None and open_rooms.allow_list is None
    assert default.allow_list.entries == ("127.0.0.1", "room-*.example.org", "10.20.30.0/24")
    assert default.pin_origin == f"pin_file {CONFIG_FIXTURES / 'room-pin.txt'}"
    assert lobby.pin_origin == "pin_env TRUECONF_TEST_LOBBY_PIN" and open_rooms.pin_origin == ""


def test_pin_env_also_reads_the_container_secret_file(monkeypatch, tmp_path):
    secret = tmp_path / "lobby-pin"
    secret.write_text("3333\n")
    monkeypatch.delenv("TRUECONF_TEST_LOBBY_PIN", raising=False)
    monkeypatch.setenv("TRUECONF_TEST_LOBBY_PIN_FILE", str(secret))
    assert load_config(CONFIG_FIXTURES / "valid.yml", 5.0).modules["lobby"].pin == "3333"
    monkeypatch.setenv("TRUECONF_TEST_LOBBY_PIN", "3333")
    with pytest.raises(
        ConfigError, match="both TRUECONF_TEST_LOBBY_PIN and TRUECONF_TEST_LOBBY_PIN_FILE are set"
    ):
        load_config(CONFIG_FIXTURES / "valid.yml", 5.0)


def test_an_inline_pin_is_accepted_but_warned_about_without_the_pin(tmp_path, caplog):
    path = tmp_path / "config.yml"
    path.write_text(f'modules:\n  default:\n    pin: "{INLINE_PIN}"\n')
    with caplog.at_level(logging.WARNING):
        config = load_config(path, 5.0)
    assert config.modules["default"].pin == INLINE_PIN
    warning = " ".join(f"{r.getMessage()} {getattr(r, 'detail', '')}" for r in caplog.records)
    assert "PIN is written into the config file" in warning and "modules.default.pin" in warning
    assert INLINE_PIN not in warning


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("ws://127.0.0.1:8765", True),
        ("127.0.0.1:1", True),
        ("room-7.example.org", True),
        ("ROOM-7.Example.ORG:9000", True),  # host names are case-insensitive
        ("room-7.example.org.evil.net", False),  # patterns are anchored at both ends
        ("room-7.evil.example.org", False),  # '*' does not cross a dot
        ("evil.net", False),
        ("10.0.0.5:8765", True),
        ("10.0.0.5:8766", False),  # an entry with a port allows only that port
        ("http://10.0.0.5:8765", True),  # the web UI port, for discovery
        ("127.0.0.2", False),
        ("10.20.30.77", True),  # a CIDR
        ("10.20.30.evil.test", False),  # an IP entry matches IP literals only
        ("a.b.rooms.example.net", True),  # '**.' crosses dots, and says so
        ("rooms.example.net", False),
        ("[fd00::1]:8765", True),
        ("[fd00::1]:8766", False),
    ],
)
def test_the_allow_list(target, allowed, monkeypatch):
    monkeypatch.setenv("TRUECONF_TEST_LOBBY_PIN", "1")
    config = load_config(CONFIG_FIXTURES / "valid.yml", 5.0)
    assert config.allows(parse_target(target)) is allowed


def test_no_allow_list_allows_everything(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("modules:\n  default:\n")
    config = load_config(path, 5.0)
    assert config.allowed_targets is None and config.allows(parse_target("anywhere.example:1"))


def test_discovery_makes_a_bare_host_the_web_ui(monkeypatch):
    monkeypatch.setenv("TRUECONF_TEST_LOBBY_PIN", "1")
    config = load_config(CONFIG_FIXTURES / "valid.yml", 5.0)
    assert str(config.modules["lobby"].parse_target("room-1.example.org")) == "http://room-1.example.org:80"
    assert str(config.modules["default"].parse_target("room-1.example.org")) == "ws://room-1.example.org:8765"
    assert str(config.modules["lobby"].parse_target("ws://room-1:9")) == "ws://room-1:9"  # a scheme wins


@pytest.mark.parametrize(
    ("written", "seconds"),
    [(5, 5.0), ("5", 5.0), ("2.5s", 2.5), ("500ms", 0.5), (0.25, 0.25), ("1m", 60.0), ('"1.5m"', 90.0)],
)
def test_timeouts(tmp_path, written, seconds):
    path = tmp_path / "config.yml"
    path.write_text(f"modules:\n  default:\n    timeout: {written}\n")
    assert load_config(path, 5.0).modules["default"].timeout_seconds == seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        ("5", 5.0),
        (" 2.5s ", 2.5),
        ("500ms", 0.5),
        ("1m", 60.0),
        ("1h", 3600.0),
        (".5s", 0.5),
        ("7.", 7.0),
    ],
)
def test_one_duration_parser_for_the_file_and_the_flags(value, seconds):
    """The config file's `timeout` and every duration flag read durations through parse_duration."""
    assert parse_duration(value, 0.05, 3600) == seconds
    assert DurationType(0.05, 3600).convert(value, None, None) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "must be seconds (5, 2.5s, 500ms or 1m), found 'soon'"),
        ("5 m s", "must be seconds"),
        ("-1s", "must be seconds"),
        ("nan", "must be seconds"),
        (float("inf"), "must be seconds"),
        (True, "must be seconds"),
        ("1d", "must be seconds"),
        ("2h", "must be between 0.05s and 3600s, found 7200s"),
        ("10ms", "must be between 0.05s and 3600s, found 0.01s"),
    ],
)
def test_a_bad_duration_has_the_same_message_in_the_file_and_on_the_flags(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(value, 0.05, 3600)
    with pytest.raises(click.BadParameter, match=re.escape(message)):
        DurationType(0.05, 3600).convert(value, None, None)


def test_a_relative_pin_file_is_relative_to_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pin").write_text("6060")
    (tmp_path / "config.yml").write_text("modules:\n  default:\n    pin_file: secrets/pin\n")
    monkeypatch.chdir("/")
    assert load_config(tmp_path / "config.yml", 5.0).modules["default"].pin == "6060"


def test_the_example_config_is_valid(tmp_path, monkeypatch):
    example = Path(__file__).parent.parent / "examples" / "trueconf-exporter.yml"
    (tmp_path / "pin").write_text("1111")
    copy = tmp_path / "trueconf-exporter.yml"
    copy.write_text(example.read_text().replace("/run/secrets/trueconf_room_pin", str(tmp_path / "pin")))
    monkeypatch.setenv("BOARDROOM_PIN", "2222")
    config = load_config(copy, 5.0)
    assert set(config.modules) == {"default", "boardrooms", "discovered", "open"}
    assert config.allows(parse_target("ROOM-12.meeting.example.org"))
    assert not config.allows(parse_target("boardroom.example.org:9999"))
    assert probe_allowed(config, "default", "ROOM-12.meeting.example.org")
    assert not probe_allowed(config, "boardrooms", "ROOM-12.meeting.example.org")
    assert not probe_allowed(config, "default", "boardroom.example.org:8765")
    assert probe_allowed(config, "open", "boardroom.example.org:8765")


def load_text(tmp_path: Path, text: str) -> ExporterConfig:
    (tmp_path / "a-pin").write_text("1111")
    (tmp_path / "b-pin").write_text("2222")
    path = tmp_path / "config.yml"
    path.write_text(text)
    return load_config(path, 5.0)


@pytest.mark.parametrize(
    "modules",
    [
        "  default:\n    pin_file: a-pin\n  open: {}\n",  # one PIN module: as in 0.1
        "  default:\n    pin_file: a-pin\n  discover:\n    pin_file: ./a-pin\n    discovery: true\n",
        "  a:\n    pin_env: TRUECONF_TEST_SHARED_PIN\n  b:\n    pin_env: TRUECONF_TEST_SHARED_PIN\n",
    ],
    ids=["one-pin-module", "one-pin-file-twice", "one-pin-variable-twice"],
)
def test_modules_sharing_one_pin_need_no_lists_of_their_own(tmp_path, monkeypatch, modules):
    monkeypatch.setenv("TRUECONF_TEST_SHARED_PIN", "3333")
    config = load_text(tmp_path, f"modules:\n{modules}allowed_targets: [127.0.0.0/8]\n")
    assert all(module.allow_list is None for module in config.modules.values())


@pytest.mark.parametrize(
    "modules",
    [
        "  a:\n    pin_file: a-pin\n  b:\n    pin_file: b-pin\n",
        "  a:\n    pin_file: a-pin\n  b:\n    pin_env: TRUECONF_TEST_B_PIN\n",
        # the same value read from two places is still two PINs to the loader: it never compares PINs
        "  a:\n    pin: '4444'\n  b:\n    pin: '4444'\n",
    ],
    ids=["two-files", "file-and-variable", "two-inline-pins"],
)
def test_two_pins_without_lists_of_their_own_are_refused(tmp_path, monkeypatch, modules):
    monkeypatch.setenv("TRUECONF_TEST_B_PIN", "2222")
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, f"modules:\n{modules}  open: {{}}\nallowed_targets: [127.0.0.0/8]\n")
    message = str(caught.value)
    assert (
        "modules.a.allowed_targets: missing: the modules a, b read PINs from more than one place" in message
    )
    assert "add it to a, b" in message and "open" not in message.removeprefix(str(tmp_path))
    assert "\n" not in message and not any(pin in message for pin in ("1111", "2222", "4444"))


TWO_SCOPED = """modules:
  a:
    pin_file: a-pin
    allowed_targets: [{a}]
  b:
    pin_file: {b_pin}
    allowed_targets: [{b}]
  open:
    allowed_targets: ["10.0.0.0/8"]
"""


def overlap_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.getMessage()} {getattr(r, 'detail', '')}"
        for r in caplog.records
        if "allow the same targets" in r.getMessage()
    ]


@pytest.mark.parametrize(
    ("a", "b", "shown"),
    [
        ('"10.0.0.0/8"', '"10.20.30.0/24:8765"', "modules a ('10.0.0.0/8') and b ('10.20.30.0/24:8765')"),
        ('"10.20.30.*"', '"10.20.30.7"', "modules a ('10.20.30.*') and b ('10.20.30.7')"),
        ('"[fd00::/64]:8765"', '"fd00::5"', "modules a ('[fd00::/64]:8765') and b ('fd00::5')"),
        ('"room-*.example.org"', '"ROOM-*.example.org:8765"', "('room-*.example.org:8765')"),
        ('"*.example.org"', '"boardroom.example.org"', "modules a ('*.example.org') and b"),
        ('"boardroom.example.org:8765"', '"**.example.org"', "modules a ('boardroom.example.org:8765')"),
    ],
)
def test_overlapping_lists_of_different_pins_are_warned_about_once(tmp_path, caplog, a, b, shown):
    with caplog.at_level(logging.WARNING):
        config = load_text(
            tmp_path, TWO_SCOPED.format(a=f"{a}, room-1.test", b=f"{b}, room-1.test", b_pin="b-pin")
        )
    assert set(config.modules) == {"a", "b", "open"}  # loaded: an overlap can be meant
    [warning] = overlap_warnings(caplog)  # one per pair of modules, however many entries overlap
    assert "a Room there can be sent either PIN" in warning and shown in warning
    assert "open" not in warning and "1111" not in warning and "2222" not in warning


@pytest.mark.parametrize(
    ("a", "b", "b_pin"),
    [
        ('"10.0.0.0/8"', '"10.0.0.0/8"', "a-pin"),  # one PIN: overlapping is harmless
        ('"10.0.0.0/24"', '"10.0.1.0/24"', "b-pin"),
        ('"10.0.0.0/8:8765"', '"10.0.0.0/8:9000"', "b-pin"),  # different ports
        ('"room-*.example.org"', '"boardroom.example.org"', "b-pin"),
        ('"*.example.org"', '"a.b.example.org"', "b-pin"),  # '*' stays in one label
        ('"10.0.0.0/8"', '"room-1.example.org"', "b-pin"),  # a name's addresses are not known at load
        ('"::ffff:0:0/96"', '"0.0.0.0/0"', "b-pin"),  # only networks of one IP version are compared
    ],
)
def test_lists_that_do_not_visibly_overlap_load_quietly(tmp_path, caplog, a, b, b_pin):
    with caplog.at_level(logging.WARNING):
        load_text(tmp_path, TWO_SCOPED.format(a=a, b=b, b_pin=b_pin))
    assert overlap_warnings(caplog) == []


@pytest.mark.parametrize(
    ("top", "module", "target", "allowed"),
    [
        ("[127.0.0.0/8]", '["127.0.0.1:8765"]', "127.0.0.1:8765", True),
        ("[127.0.0.0/8]", '["127.0.0.1:8765"]', "127.0.0.1:8766", False),  # outside the module's list
        ('["127.0.0.1:9000"]', '["127.0.0.0/8"]', "127.0.0.1:8765", False),  # outside the fleet
        (None, '["room-*.example.org"]', "room-1.example.org", True),  # no fleet list: the module's alone
        (None, '["room-*.example.org"]', "lobby.example.org", False),
    ],
)
def test_a_module_list_narrows_the_top_level_one(tmp_path, top, module, target, allowed):
    text = f"modules:\n  a:\n    pin_file: a-pin\n    allowed_targets: {module}\n"
    config = load_text(tmp_path, text + (f"allowed_targets: {top}\n" if top else ""))
    assert probe_allowed(config, "a", target) is allowed
    assert config.unscoped_pin_modules() == []


def test_a_pin_module_with_no_list_anywhere_is_reported_for_the_start_up_warning(tmp_path):
    config = load_text(tmp_path, "modules:\n  a:\n    pin_file: a-pin\n  open: {}\n")
    assert config.unscoped_pin_modules() == ["a"]


@pytest.mark.parametrize("doc", ["fleet.md", "configuration.md"])
def test_the_docs_example_configs_load(tmp_path, monkeypatch, doc):
    """Every config example in the docs is one the loader accepts (scoped where it has two PINs)."""
    text = (Path(__file__).parent.parent / "docs" / doc).read_text()
    examples = [
        block
        for block in map(yaml.safe_load, re.findall(r"```yaml\n(.*?)```", text, re.S))
        if isinstance(block, dict) and "modules" in block
    ]
    assert examples
    (tmp_path / "pin").write_text("1111")
    monkeypatch.setenv("BOARDROOM_PIN", "2222")
    for document in examples:
        for module in document["modules"].values():
            if "pin_file" in module:
                module["pin_file"] = str(tmp_path / "pin")
        config = parse_config(document, tmp_path / "config.yml", 5.0)
        assert all(m.allow_list is not None for m in config.modules.values() if m.pin is not None)
