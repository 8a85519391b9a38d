"""The status page's verdicts (exporter/collect/verdicts.py): pure rules, and their numbers kept equal to the
alerting rules' (prometheus/alerts.yml) by reading that file."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.collect import verdicts
from exporter.collect.verdicts import Group, failures_rose, judge

ALERTS = Path(__file__).resolve().parent.parent / "prometheus" / "alerts.yml"
NOW = 1_700_000_000.0

# --- the rules ----------------------------------------------------------------------------------------------


def test_a_room_that_is_down_is_down_with_its_reason_whatever_else():
    verdict = judge(up=False, reason="connect", waiting_age=10_000, malformed=5, now=NOW)
    assert verdict == verdicts.Verdict(Group.DOWN, "down (connect)")


def test_a_room_with_nothing_wrong_or_nothing_known_is_ok():
    assert judge(up=True, now=NOW) == verdicts.Verdict(Group.OK, "ok")
    assert judge(
        up=True, waiting_age=900, downloading_age=600, availability="available", malformed=0, now=NOW
    ) == verdicts.Verdict(Group.OK, "ok"), "the rules fire above the number, not at it (malformed: at 1)"


@pytest.mark.parametrize(
    ("facts", "words"),
    [
        ({"waiting_age": 900.5}, "transfer waiting too long"),
        ({"downloading_age": 600.5}, "transfer taking too long"),
        ({"failures_rose_at": NOW - 900}, "new failures"),
        ({"availability": "forbidden_by_server"}, "file transfer unavailable"),
        ({"availability": "unknown"}, "file transfer unavailable"),
        ({"malformed": 1}, "malformed entries"),
    ],
)
def test_each_problem_by_the_alerts_numbers(facts: dict[str, Any], words: str):
    assert judge(up=True, now=NOW, **facts) == verdicts.Verdict(Group.ATTENTION, words)


def test_new_failures_last_the_rules_window_and_no_longer():
    assert judge(up=True, failures_rose_at=NOW - 901, now=NOW).group is Group.OK


def test_every_problem_at_once_is_named_in_order():
    verdict = judge(
        up=True,
        waiting_age=1e6,
        downloading_age=1e6,
        failures_rose_at=NOW,
        availability="server_login_required",
        malformed=3,
        now=NOW,
    )
    assert verdict.words == ", ".join(verdicts.PROBLEMS)


@pytest.mark.parametrize(
    ("previous", "previous_at", "failed", "at", "rose"),
    [
        (2, NOW - 15, 3, NOW, True),
        (2, NOW - 900, 3, NOW, True),
        (2, NOW - 901, 3, NOW, False),  # the reading before is older than the window: no telling when it rose
        (3, NOW - 15, 3, NOW, False),
        (None, None, 7, NOW, False),  # first read: failures counted before the page saw the Room
        (4, NOW - 15, 0, NOW, False),  # the counter starting again at 0 (the Room forgotten): a reset
        (5, NOW - 15, 2, NOW, False),  # any reading below the one before is a reset, not a rise
        (0, NOW - 15, 0, NOW, False),
        (0, NOW - 15, 1, NOW, True),  # the first failure counted after a reset
        (2, NOW + 15, 3, NOW, False),  # out of order
    ],
)
def test_a_rise_is_against_the_counter_read_before_within_the_window(previous, previous_at, failed, at, rose):
    assert failures_rose(previous, previous_at, failed, at) is rose


def test_a_counters_readings_tell_new_failures_as_increase_does():
    """A Room's failed counter read every 15 s: new failures at each rise, none at a reset."""
    readings = [0, 0, 1, 1, 3, 0, 0, 2]
    rose = [
        failures_rose(before, NOW + 15 * i, after, NOW + 15 * (i + 1))
        for i, (before, after) in enumerate(itertools.pairwise(readings))
    ]
    assert rose == [False, True, False, True, False, False, True]


# --- the numbers are the alerting rules' --------------------------------------------------------------------

UNITS = {"s": 1, "m": 60, "h": 3600}


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, f"a duration this test cannot read: {duration!r}"
    return int(match[1]) * UNITS[match[2]]


def alert_numbers(text: str) -> dict[str, float | str]:
    """What the page's verdicts depend on, as prometheus/alerts.yml says it."""
    rules = {rule["alert"]: rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]}

    def compared(alert: str, operator: str) -> float:
        expr = " ".join(rules[alert]["expr"].split())
        match = re.search(rf"{re.escape(operator)}\s*([\d.]+)$", expr)
        assert match, f"{alert}: no '{operator} NUMBER' at the end of {expr!r}"
        return float(match[1])

    failed = " ".join(rules["TrueconfFileRequestsFailed"]["expr"].split())
    windows: dict[str, float] = {}
    for direction in ("outgoing", "incoming"):
        counter = f"trueconf_{direction}_file_requests_finished_total"
        match = re.search(rf'increase\({counter}\{{status="failed"\}}\[(\w+)\]\)', failed)
        assert match, f"TrueconfFileRequestsFailed: no window of {counter} in {failed!r}"
        windows[direction] = seconds(match[1])
    unavailable = rules["TrueconfFileTransferUnavailable"]["expr"]
    state = re.search(r'trueconf_file_transfer_availability\{state="(\w+)"\}', unavailable)
    assert state and unavailable.rstrip().endswith("== 0"), unavailable
    return {
        "waiting": compared("TrueconfFileRequestWaitingTooLong", ">"),
        "downloading": compared("TrueconfFileTransferTooLong", ">"),
        "malformed": compared("TrueconfMalformedEntries", ">="),
        "failed_count": compared("TrueconfFileRequestsFailed", ">"),
        "failed_window": windows["outgoing"],
        "incoming_failed_window": windows["incoming"],
        "available": state[1],
    }


OURS: dict[str, float | str] = {
    "waiting": verdicts.WAITING_TOO_LONG_SECONDS,
    "downloading": verdicts.DOWNLOADING_TOO_LONG_SECONDS,
    "malformed": verdicts.MALFORMED_AT_LEAST,
    "failed_count": 0,  # a rise: any count above the one before
    "failed_window": verdicts.NEW_FAILURES_WINDOW_SECONDS,
    "incoming_failed_window": verdicts.NEW_FAILURES_WINDOW_SECONDS,
    "available": verdicts.AVAILABLE,
}


def test_the_verdicts_use_the_alerting_rules_numbers():
    assert alert_numbers(ALERTS.read_text()) == OURS


def test_every_number_read_is_marked_as_a_threshold_in_the_file():
    """alerts.yml marks each threshold `# threshold:` above its rule's expr: the lines this test reads."""
    text = ALERTS.read_text()
    for alert in (
        "TrueconfFileRequestWaitingTooLong",
        "TrueconfFileTransferTooLong",
        "TrueconfFileRequestsFailed",
        "TrueconfMalformedEntries",
        "TrueconfFileTransferUnavailable",
    ):
        rule = text[text.index(f"- alert: {alert}\n") :].split("- alert:", 2)[1]
        assert "threshold:" in rule.split("expr:", 1)[0], alert


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('{status="waiting"} > 900', '{status="waiting"} > 1200'),
        ('{status="downloading"} > 600', '{status="downloading"} > 300'),
        ("malformed >= 1", "malformed >= 2"),
        ("[15m]", "[30m]"),
        (
            'incoming_file_requests_finished_total{status="failed"}[15m]',
            'incoming_file_requests_finished_total{status="failed"}[1h]',
        ),
    ],
)
def test_a_number_changed_in_alerts_yml_alone_is_caught(old: str, new: str):
    text = ALERTS.read_text()
    assert old in text
    assert alert_numbers(text.replace(old, new)) != OURS
