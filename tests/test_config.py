"""`--config.file`: one fixture per kind of mistake, first line says what the message must contain."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from exporter.fleet.config import ConfigError, load_config
from exporter.room import parse_target
from tests.test_cli import run

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
    "name", ["not-yaml", "unknown-module-key", "timeout-out-of-range", "allowed-target-with-scheme"]
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
    ("written", "seconds"), [(5, 5.0), ("5", 5.0), ("2.5s", 2.5), ("500ms", 0.5), (0.25, 0.25)]
)
def test_timeouts(tmp_path, written, seconds):
    path = tmp_path / "config.yml"
    path.write_text(f"modules:\n  default:\n    timeout: {written}\n")
    assert load_config(path, 5.0).modules["default"].timeout_seconds == seconds


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
