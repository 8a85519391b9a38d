"""The method table is the one place the Room's method names and their collectors live: these tests pin the
names to the reference's spelling and show the flags, the config and the scrape all follow the table."""

from __future__ import annotations

from click.testing import CliRunner

from exporter.cli import main
from exporter.methods import COLLECTORS, METHODS, OPTIONAL_METHODS, is_optional, methods_for

REFERENCE_NAMES = (
    "getOutgoingFilesRequests",
    "getIncomingFilesRequests",
    "getFileTransferAvailability",
    "getAppState",
    "getSystemInfo",
)
"""The names as the Room API reference (§4, §5) spells them, in the order a scrape sends them."""


def test_the_names_are_the_references_and_only_outgoing_is_required():
    assert tuple(method.name for method in METHODS) == REFERENCE_NAMES
    assert [method.name for method in METHODS if method.collector is None] == ["getOutgoingFilesRequests"]
    assert COLLECTORS == ("incoming", "availability", "app_state", "system_info")
    assert [is_optional(name) for name in REFERENCE_NAMES] == [False, True, True, True, True]
    assert not is_optional(None) and not is_optional("auth")


def test_a_scrape_asks_outgoing_first_then_every_collector_not_turned_off():
    assert methods_for({}) == REFERENCE_NAMES
    assert methods_for(dict.fromkeys(COLLECTORS, False)) == ("getOutgoingFilesRequests",)
    assert methods_for({"app_state": False, "incoming": True}) == (
        "getOutgoingFilesRequests",
        "getIncomingFilesRequests",
        "getFileTransferAvailability",
        "getSystemInfo",
    )


def test_every_optional_method_has_its_flag_and_help():
    help_text = " ".join(CliRunner().invoke(main, ["serve", "--help"], terminal_width=400).output.split())
    for method in OPTIONAL_METHODS:
        assert method.collector is not None
        flag = method.collector.replace("_", "-")
        assert f"--collector.{flag} / --no-collector.{flag}" in help_text
        assert f"Ask {method.name}: {method.tells} at every scrape." in help_text
