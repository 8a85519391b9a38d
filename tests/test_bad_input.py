"""Bad input anywhere gets one clear line, never a traceback: a 400 or 403 from `/probe`, exit status 2 from
the command line. Hypothesis throws arbitrary target and module strings at both.

No generated target can reach the network: the allow-list holds one name no generator will produce, so
every generated target is refused before any lookup or connection (or is a malformed request).
"""

from __future__ import annotations

import re
import subprocess
import urllib.parse

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exporter.cli import main
from exporter.fleet.reload import ConfigHolder
from exporter.room import parse_target
from exporter.web.app import ExporterApp
from exporter.web.settings import ExporterSettings
from tests.processes import http_get
from tests.test_cli import run

ONLY_ALLOWED = "the-only-allowed-room-of-this-test.test"
TARGETS = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=80)
PROPERTY_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NASTY = [
    "[",
    "%5B",
    "[::1",
    "]",
    "[::1]:99999",
    "ws://[",
    "http://:0",
    "a:b:c",
    "::1",
    "\u0660\u0661",
    "a" * 300,
]


@pytest.fixture
def fleet_url(tmp_path, serve_app) -> str:
    config = tmp_path / "config.yml"
    config.write_text(f"modules:\n  default: {{}}\n  other: {{}}\nallowed_targets: [{ONLY_ALLOWED}]\n")
    settings_ = ExporterSettings(parse_target("ws://127.0.0.1:1"), None, 1.0)
    return serve_app(ExporterApp(settings_, ConfigHolder(config, 1.0)))


@PROPERTY_SETTINGS
@given(target=TARGETS, module=st.one_of(st.none(), TARGETS))
@example(target="%5B", module=None)
@example(target="[::1", module="default")
@example(target="]", module="")
def test_probe_answers_every_target_with_one_line_400_or_403(fleet_url, target, module):
    query = {"target": target} if module is None else {"target": target, "module": module}
    status, headers, body = http_get(f"{fleet_url}/probe?{urllib.parse.urlencode(query)}", timeout=10)
    assert status in (400, 403), (status, body)
    text = body.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert "Traceback" not in text
    assert headers["Content-Type"].startswith("text/plain")


@PROPERTY_SETTINGS
@given(target=TARGETS)
@example(target="[")
@example(target="[::1")
@example(target="%5B")
def test_the_command_line_answers_every_target_with_exit_2(target):
    """An empty --pin is refused after --target is parsed, so a valid target never connects anywhere."""
    result = CliRunner().invoke(main, ["check", "--target", target, "--pin", " "])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output


@pytest.mark.process
@pytest.mark.parametrize("target", NASTY)
def test_a_real_check_process_says_one_line_for_a_nasty_target(target):
    result: subprocess.CompletedProcess[str] = run("check", "--target", target, "--pin", " ")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "--target" in error or "--pin" in error


@pytest.mark.process
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRUECONF_EXPORTER_TARGET", "[::1"),
        ("TRUECONF_EXPORTER_TIMEOUT", "soon"),
        ("TRUECONF_EXPORTER_MAX_MESSAGE_BYTES", "-1"),
        ("TRUECONF_EXPORTER_WEB_LISTEN_ADDRESS", "[::1]"),
        ("TRUECONF_EXPORTER_LOG_LEVEL", "loud"),
    ],
)
def test_a_bad_environment_variable_is_exit_2_with_one_line(variable, value):
    result = run("serve", env={variable: value})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error:")]) == 1


@pytest.mark.parametrize(
    ("target", "suggestion"),
    [
        ("fd00::1:8765", "as [fd00::1]:8765, or [fd00::1:8765]:8765 if all of it is the address"),
        ("2001:db8::5:9000", "as [2001:db8::5]:9000, or [2001:db8::5:9000]:8765 if all"),
        ("::1", "as [::1]:8765"),
        ("fd00::1", "as [fd00::1]:8765"),
        ("http://fd00::1:8080", "as http://[fd00::1]:8080, or http://[fd00::1:8080]:80 if all"),
        ("ws://fd00::1", "as ws://[fd00::1]:8765"),
        ("fd00::1:99999", "as [ADDRESS]:PORT"),
    ],
)
def test_an_ipv6_address_without_brackets_gets_a_suggestion_that_parses(target, suggestion):
    """`fd00::1:8765` suggested `[fd00::1:8765]:8765`; the address and port as most people mean them first."""
    with pytest.raises(ValueError, match=re.escape(suggestion)):
        parse_target(target)
    first = suggestion.removeprefix("as ").split(",")[0]
    if "ADDRESS" not in first:
        parse_target(first)  # the suggestion itself is a valid target
