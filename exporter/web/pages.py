"""The status pages: `/`, one row per Room (the ones that are down first), and `/room?target=...&module=...`,
one Room's last results.

An operator of many Rooms reads why a Room is down here before reaching for curl. Nothing on the pages is a
secret: targets, module names, where a PIN comes from (never the PIN), timings, reasons and messages.

Both pages are bounded in size whatever was probed, so a few hundred clients holding one cannot hurt the
exporter: at most `MAX_ROWS` rows, and every text cut to a fixed number of bytes once made safe to show
(control and bidi characters escaped visibly, then HTML-escaped). `/` is at most `MAX_PAGE_BYTES`, a Room's
page at most `MAX_ROOM_PAGE_BYTES`; tests/test_status_page.py builds both at their worst.
"""

from __future__ import annotations

import html
import math
import time
import urllib.parse
from types import MappingProxyType

from exporter import __version__
from exporter.collect.history import Latest, RecentResults, Result, RoomHistory, verdict_of
from exporter.collect.verdict import human_duration
from exporter.collect.verdicts import (
    DOWNLOADING_TOO_LONG_SECONDS,
    MALFORMED_AT_LEAST,
    NEW_FAILURES,
    NEW_FAILURES_WINDOW_SECONDS,
    UNAVAILABLE,
    WAITING_TOO_LONG_SECONDS,
    Group,
)
from exporter.fleet.config import Module
from exporter.fleet.reload import ConfigHolder
from exporter.room import RoomTarget, TargetError, parse_target
from exporter.room.trace import Trace
from exporter.text import visible
from exporter.web.settings import ExporterSettings

MAX_PAGE_BYTES = 256 * 1024
"""The most `/` can weigh: 300 rows of at most about 830 bytes, and the exporter's own part (its modules
and allowed targets, at most 20 of each)."""
MAX_ROOM_PAGE_BYTES = 16 * 1024
"""The most a Room's own page can weigh: its 10 results and their longer messages."""
MAX_ROWS = 300
"""Rooms shown on `/`; the rest are counted ("N more Rooms not shown"), the Rooms that are down first."""
RESULTS_SHOWN = 10
"""Results on a Room's page, newest first."""
MAX_LISTED = 20
"""Modules, and allowed targets, listed on `/`; the rest are counted."""

NAME_BYTES = 64
"""A Room's name (at most 64 characters, picture.MAX_NAME_CHARS) as HTML: cut only when escaped or wide."""
TARGET_BYTES = 64
MODULE_BYTES = 32
REASON_BYTES = 24
VERDICT_BYTES = 120
"""Every problem at once fits; `down (reason)` is shorter still."""
DETAIL_BYTES = 128
"""A down Room's message under its verdict: a down row has no facts to show, so it weighs no more than a row
with every problem."""
VERSION_BYTES = 24
"""A real version (5.0.2.17) is far shorter; the longest the parser takes (four parts of 9 digits) is cut."""
LINK_QUERY_BYTES = 100
"""A Room's row links to its page and its debug probe when the links' query fits: a host and a module of about
78 characters together (the host written without `ws://`, as /room and /probe take it). The two links are
the largest part of what a row may weigh on a page of MAX_ROWS rows within MAX_PAGE_BYTES."""
ROOM_TARGET_BYTES = 400
ROOM_DETAIL_BYTES = 1000
ABOUT_BYTES = 128
"""A config path, a module name or an allowed target in the exporter's own part of `/`."""
MAX_QUERY_FIELDS = 8
"""Parameters a Room page's query may have (target, module, and a few a proxy may add)."""

ELLIPSIS = "…"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em; }
table { border-collapse: collapse; margin-bottom: 1.2em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
span.up { color: #060; } span.down { color: #a00; font-weight: bold; }
.summary { font-size: 1.2em; }
table.board { font-size: 0.9em; } table.board small { color: #555; }
table.board td:first-child small { white-space: nowrap; }
table.fleet td:nth-child(3), table.single td:nth-child(2) { min-width: 14em; }
table.board tr.down td { background: #f8d7da; } table.board tr.warn td { background: #fff3cd; }
table.board td b { color: #a00; } table.board td a, table.board td a b { color: inherit; }
"""


def shown(text: str, limit: int) -> str:
    """`text` as HTML that is safe to show and at most `limit` bytes of UTF-8: control and bidi characters
    escaped visibly (text.visible), then HTML-escaped (quotes included), then cut, a cut ending in '…'.

    The cut is on bytes of the finished HTML, so a text of entities or escapes weighs no more than any
    other; an entity cut in two is dropped whole. Only the first `limit` characters are ever looked at."""
    safe = html.escape(visible(text[:limit]), quote=True)
    encoded = safe.encode()
    if len(encoded) <= limit and len(text) <= limit:
        return safe
    cut = encoded[: limit - len(ELLIPSIS.encode())].decode("utf-8", "ignore")
    entity = cut.rfind("&", max(0, len(cut) - 6))
    if entity != -1 and ";" not in cut[entity:]:
        cut = cut[:entity]
    return cut + ELLIPSIS


def _page(title: str, body: str) -> bytes:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style></head>
<body>
{body}
</body></html>
""".encode()


def landing_page(
    settings: ExporterSettings, config: ConfigHolder | None = None, history: RecentResults | None = None
) -> bytes:
    """The page for a person with a browser: the exporter, its Room or modules, and each Room's latest
    result, the Rooms that are down first."""
    about = _fleet_about(config) if config is not None else _single_about(settings)
    now = time.time()
    board = history.board(now) if history is not None else []
    rooms = _board(board, fleet=config is not None, now=now)
    return _page(
        "TrueConf Room exporter", f"<h1>TrueConf Room exporter</h1>\n{about}\n<h2>Rooms</h2>\n{rooms}"
    )


def _single_about(settings: ExporterSettings) -> str:
    target = shown(str(settings.target), ABOUT_BYTES)
    auth = "PIN configured" if settings.pin is not None else "no PIN, unsecured auth"
    return f"""<p>Version {shown(__version__, ABOUT_BYTES)}. Target: <code>{target}</code> ({auth}),
timeout {settings.timeout_seconds:g}s.</p>
<ul>
<li><a href="metrics">/metrics</a>: the Room's outgoing file requests, collected at every scrape</li>
<li><a href="healthz">/healthz</a>: liveness of the exporter itself</li>
</ul>"""


def _pin_words(source: str) -> str:
    """Where a module's PIN comes from, in words; never the PIN."""
    return "no PIN (unsecured auth)" if source == "none" else f"PIN from {source}"


def _more(count: int, what: str) -> str:
    return f"<li>and {count} more {what}</li>" if count > 0 else ""


def _fleet_about(holder: ConfigHolder) -> str:
    config = holder.config
    modules = list(config.modules.values())
    listed = "".join(
        f"<li><code>{shown(m.name, ABOUT_BYTES)}</code>: {shown(_pin_words(m.pin_source), ABOUT_BYTES)}, "
        f"timeout {m.timeout_seconds:.6g}s, discovery {'on' if m.discovery else 'off'}"
        f"{'' if m.allow_list is None else f', {len(m.allow_list.entries)} allowed targets of its own'}</li>"
        for m in modules[:MAX_LISTED]
    ) + _more(len(modules) - MAX_LISTED, "modules")
    if config.allowed_targets is None:
        allowed = "<p>Targets allowed: any target (no allowed_targets).</p>"
    else:
        entries = list(config.allowed_targets)
        items = "".join(f"<li><code>{shown(str(e), ABOUT_BYTES)}</code></li>" for e in entries[:MAX_LISTED])
        allowed = f"<p>Targets allowed:</p><ul>{items}{_more(len(entries) - MAX_LISTED, 'entries')}</ul>"
    path = shown(str(holder.path), ABOUT_BYTES)
    return f"""<p>Version {shown(__version__, ABOUT_BYTES)}. Config file <code>{path}</code>.</p>
<p>Modules:</p><ul>{listed}</ul>
{allowed}
<ul>
<li><code>/probe?target=HOST[:PORT]&amp;module=NAME</code>: one Room's outgoing file requests, collected at
every probe (the target must be in the allow-list above)</li>
<li><a href="metrics">/metrics</a>: the exporter's own metrics</li>
<li><a href="healthz">/healthz</a>: liveness of the exporter itself</li>
<li><code>POST /-/reload</code>: re-read the config file (as SIGHUP does)</li>
</ul>"""


def _board(board: list[Latest], fleet: bool, now: float) -> str:
    if not board:
        return "<p>No Room collected yet: results show here after the first scrape.</p>"
    down = sum(1 for row in board if row.verdict.group is Group.DOWN)
    attention = sum(1 for row in board if row.verdict.group is not Group.OK)
    summary = (
        f'<p class="summary"><b>{len(board)} Rooms</b>: <b>{attention} need attention</b>, {down} of them '
        f"down; {len(board) - attention} ok.</p>\n{LEGEND}"
    )
    mode = "fleet" if fleet else "single"  # the CSS finds the verdict column by it
    module_header = "<th>module</th>" if fleet else ""
    probe_header = "<th>debug</th>" if fleet else ""
    rows = "".join(_board_row(row, fleet, now) for row in board[:MAX_ROWS])
    hidden = len(board) - MAX_ROWS
    more = f"<p>{hidden} more Rooms not shown.</p>\n" if hidden > 0 else ""
    return f"""{summary}
<table class="board {mode}"><tr><th>Room</th>{module_header}<th>verdict</th><th>failed</th>\
<th>oldest waiting</th><th>oldest download</th><th>file transfer</th><th>app state</th><th>version</th>\
<th>last read</th><th>took</th>{probe_header}</tr>
{rows}</table>
{more}"""


LEGEND = (
    "<p>Rooms that are down first, then those with another problem, then the rest; the most recently read "
    "first within each. The verdicts use the alerting rules' numbers (prometheus/alerts.yml): a transfer "
    f"waiting over {WAITING_TOO_LONG_SECONDS / 60:g} min or downloading over "
    f"{DOWNLOADING_TOO_LONG_SECONDS / 60:g} min, a failed counter that rose within "
    f"{NEW_FAILURES_WINDOW_SECONDS / 60:g} min, file transfer not available, {MALFORMED_AT_LEAST} "
    "malformed entry or more. The failed column is that counter: the transfers seen failing, outgoing and "
    "incoming, since the exporter began watching the Room. Counts and ages are as of the last read; an "
    "alert also waits its <code>for:</code>.</p>"
)

ROW_CLASSES = MappingProxyType({Group.DOWN: "down", Group.ATTENTION: "warn", Group.OK: "ok"})
DASH = "\u2013"
NBSP = "\u00a0"
"""Keeps a number and its unit on one line (2 bytes; `&nbsp;` is 6)."""
"""A fact the Room's latest result does not give (down, or the method not asked or not answered)."""


def _board_row(row: Latest, fleet: bool, now: float) -> str:
    """A Room's row: its name and target (a link to its own page), the verdict, the facts behind it, and
    in fleet mode its module and a link to its debug probe."""
    result, verdict = row.result, row.verdict
    written = _as_written(row.target)
    query = _query(written, row.module)
    room = shown(written, TARGET_BYTES)
    if row.identity is not None:  # the name first, the target beside it in small
        room = f"<b>{shown(row.identity.name, NAME_BYTES)}</b><br><small>{room}</small>"
    room = (
        f"{room} (too long to link)" if query is None else f'<a href="room?{html.escape(query)}">{room}</a>'
    )
    module = probe = ""
    if fleet:
        module = f"<td>{shown(row.module or '', MODULE_BYTES)}</td>"
        link = "" if query is None else f'<a href="probe?{html.escape(query)}&amp;debug=true">probe</a>'
        probe = f"<td>{link}</td>"
    return (
        f'<tr class="{ROW_CLASSES[verdict.group]}"><td>{room}</td>{module}<td>{_verdict(row)}</td>'
        f"{_fact(_count(result.failed), NEW_FAILURES in verdict.words)}"
        f"{_fact(_age(result.waiting_age), _over(result.waiting_age, WAITING_TOO_LONG_SECONDS))}"
        f"{_fact(_age(result.downloading_age), _over(result.downloading_age, DOWNLOADING_TOO_LONG_SECONDS))}"
        f"{_fact(_words(result.availability), UNAVAILABLE in verdict.words)}"
        f"<td>{_words(result.app_state)}</td><td>{shown(row.version or DASH, VERSION_BYTES)}</td>"
        f"<td>{_ago(now - result.at)}</td><td>{_duration(result.duration_seconds)}</td>{probe}</tr>\n"
    )


def _verdict(row: Latest) -> str:
    """The verdict, and for a Room that is down the failure's message under it (why, before any curl)."""
    group, result = row.verdict.group, row.result
    if group is Group.OK:
        return shown(row.verdict.words, VERDICT_BYTES)
    if group is Group.ATTENTION:
        return f"<b>{shown(row.verdict.words, VERDICT_BYTES)}</b>"
    down = f"<b>down ({shown(result.reason, REASON_BYTES)})</b>"  # the reason cut as its own text
    return f"{down}<br><small>{shown(result.detail, DETAIL_BYTES)}</small>" if result.detail else down


def _fact(text: str, bad: bool) -> str:
    """A cell, marked when it is the fact behind the Room's verdict."""
    return f"<td><b>{text}</b></td>" if bad else f"<td>{text}</td>"


def _over(age: float | None, threshold: float) -> bool:
    return age is not None and age > threshold


def _count(count: int | None) -> str:
    return DASH if count is None else str(count) if count < 10**9 else "&gt;999999999"


def _age(seconds: float | None) -> str:
    """An age in at most 6 characters: 4m12s, 1h03m, 3d04h, >999d (as HTML)."""
    if seconds is None:
        return DASH
    return human_duration(seconds) if 0 <= seconds < 1000 * 86400 else "&gt;999d"


def _ago(seconds: float) -> str:
    return f"{_age(max(0.0, seconds))}{NBSP}ago" if math.isfinite(seconds) else "?"


def _words(state: str | None) -> str:
    """A state label (`forbidden_by_server`) as words; the states are the exporter's own, never a Room's."""
    return DASH if state is None else html.escape(state.replace("_", " "))


def _when(at: float) -> str:
    if not (math.isfinite(at) and 0 <= at < 1e11):  # time.gmtime refuses what no clock gives
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _duration(seconds: float) -> str:
    """At most about a dozen characters, whatever the number."""
    return f"{seconds * 1000:.0f}{NBSP}ms" if 0 <= seconds < 100 else f"{seconds:.3g}{NBSP}s"


def _query(target: str, module: str | None) -> str | None:
    """A Room's query (`target=...&module=...`), or None when longer than LINK_QUERY_BYTES. The target is
    written as a person would (`room-12.example.org:8765`): the same Room to /room and /probe, and shorter."""
    if len(target) + len(module or "") > LINK_QUERY_BYTES + len(RECORDED_SCHEME):  # quoting never shortens
        return None
    target = _as_written(target)
    fields = {"target": target} if module is None else {"target": target, "module": module}
    query = urllib.parse.urlencode(fields)
    return query if len(query) <= LINK_QUERY_BYTES else None


def room_page(history: RecentResults, query_string: str, fleet: bool) -> tuple[str, bytes]:
    """`/room?target=...&module=...` (module left out without --config.file): one Room's last results,
    newest first, as an HTTP status and a page; 400 for a malformed query, 404 for a Room not remembered."""
    try:
        query = urllib.parse.parse_qs(
            query_string, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_QUERY_FIELDS
        )
    except ValueError:
        return _refused("400 Bad Request", f"a Room page's query has at most {MAX_QUERY_FIELDS} parameters")
    targets, modules = query.get("target", []), query.get("module", [])
    if len(targets) != 1 or len(modules) > 1:
        return _refused("400 Bad Request", "give 'target' once, and 'module' at most once")
    target, module = targets[0], (modules[0] if modules else None) or None
    room = history.room(target, module) or history.room(_as_recorded(target), module)
    if room is None:
        return _refused(
            "404 Not Found",
            f"No results remembered for <code>{shown(target, ROOM_TARGET_BYTES)}</code>"
            f"{_module_words(module)}: not collected in the last hour, or never.",
        )
    return "200 OK", _page("TrueConf Room exporter: one Room", _room_body(room, fleet))


RECORDED_SCHEME = "ws://"


def _as_written(target: str) -> str:
    """A recorded target (`ws://host:port`) without its scheme when it reads back as the same Room."""
    if not target.startswith(RECORDED_SCHEME):
        return target
    short = target[len(RECORDED_SCHEME) :]
    return short if _as_recorded(short) == target else target


def _as_recorded(target: str) -> str:
    """A target as a person may write it (`room-12.example.org`) in the form results are recorded under
    (`ws://room-12.example.org:8765`); unchanged when it is no target at all."""
    try:
        return str(parse_target(target))
    except TargetError:
        return target


def _module_words(module: str | None) -> str:
    return "" if module is None else f" with module <code>{shown(module, MODULE_BYTES)}</code>"


def _refused(status: str, sentence: str) -> tuple[str, bytes]:
    return status, _page("TrueConf Room exporter", f'<p>{sentence}</p>\n<p><a href="./">All Rooms</a></p>')


def _room_body(room: RoomHistory, fleet: bool) -> str:
    latest = room.results[-1]
    verdict = verdict_of(room, time.time())
    state = f'<span class="{"up" if latest.up else "down"}">{shown(verdict.words, VERDICT_BYTES)}</span>'
    probe = ""
    if fleet and room.module is not None:
        query = _query(room.target, room.module)
        if query is not None:
            probe = f' <a href="probe?{html.escape(query)}&amp;debug=true">probe now, with its trace</a>'
    rows = "".join(_result_row(result) for result in list(reversed(room.results))[:RESULTS_SHOWN])
    title = f"<code>{shown(room.target, ROOM_TARGET_BYTES)}</code>{_module_words(room.module)}"
    if room.identity is not None:
        title = f"{shown(room.identity.name, NAME_BYTES)}: {title}"
    return f"""<h1>{title}: {state}</h1>
<p>{_identity_words(room)}</p>
<p>Its last {RESULTS_SHOWN} results at most, newest first.{probe} <a href="./">All Rooms</a></p>
<table><tr><th>time (UTC)</th><th>duration</th><th>up</th><th>reason</th><th>detail</th></tr>
{rows}</table>"""


def _identity_words(room: RoomHistory) -> str:
    """Who the Room says it is and its version, as last seen (getSystemInfo is asked once per session)."""
    identity = room.identity
    who = (
        "Name not known yet: the Room gives it while logged in to its server (getSystemInfo authInfo)."
        if identity is None
        else f"Logged in as <b>{shown(identity.name, NAME_BYTES)}</b>"
        f"{'' if not identity.peer_id else f', TrueConf ID {shown(identity.peer_id, NAME_BYTES)}'}."
    )
    version = "" if room.version is None else f" Version {shown(room.version, VERSION_BYTES)}."
    return who + version


def _result_row(result: Result) -> str:
    return (
        f"<tr><td>{_when(result.at)}</td><td>{_duration(result.duration_seconds)}</td>"
        f"<td>{'1' if result.up else '0'}</td><td>{shown(result.reason, REASON_BYTES)}</td>"
        f"<td>{shown(result.detail, ROOM_DETAIL_BYTES)}</td></tr>\n"
    )


def debug_probe_page(target: RoomTarget, module: Module, timeout: float, trace: Trace, metrics: str) -> str:
    """`/probe?...&debug=true`: each phase with its time and outcome, then the metrics the probe exposes.
    Every line is shown with its control and bidi characters escaped: the target, a Room's keys, its
    messages and its version (a label value) are its own words."""
    header = [
        f"Probe of {target} with module {module.name} ({_pin_words(module.pin_source)}), "
        f"deadline {timeout:g}s",
        "",
    ]
    lines = [*header, *trace.lines(), "", "Metrics:", *metrics.rstrip().split("\n"), ""]
    return "\n".join(visible(line) for line in lines)
