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

from exporter import __version__
from exporter.collect.history import Latest, RecentResults, Result, RoomHistory
from exporter.fleet.config import Module
from exporter.fleet.reload import ConfigHolder
from exporter.room import RoomTarget, TargetError, parse_target
from exporter.room.trace import Trace
from exporter.text import visible
from exporter.web.settings import ExporterSettings

MAX_PAGE_BYTES = 256 * 1024
"""The most `/` can weigh: 300 rows of at most about 800 bytes, and the exporter's own part (its modules
and allowed targets, at most 20 of each)."""
MAX_ROOM_PAGE_BYTES = 16 * 1024
"""The most a Room's own page can weigh: its 10 results and their longer messages."""
MAX_ROWS = 300
"""Rooms shown on `/`; the rest are counted ("N more Rooms not shown"), the Rooms that are down first."""
RESULTS_SHOWN = 10
"""Results on a Room's page, newest first."""
MAX_LISTED = 20
"""Modules, and allowed targets, listed on `/`; the rest are counted."""

TARGET_BYTES = 100
MODULE_BYTES = 48
REASON_BYTES = 24
DETAIL_BYTES = 160
LINK_QUERY_BYTES = 200
"""A Room's row links to its page when the link's query fits (every host name a DNS name can be does)."""
ROOM_TARGET_BYTES = 400
ROOM_DETAIL_BYTES = 1000
ABOUT_BYTES = 200
"""A config path, a module name or an allowed target in the exporter's own part of `/`."""
MAX_QUERY_FIELDS = 8
"""Parameters a Room page's query may have (target, module, and a few a proxy may add)."""

ELLIPSIS = "…"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; }
table { border-collapse: collapse; margin-bottom: 1.2em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
.up { color: #060; } .down { color: #a00; font-weight: bold; }
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
    board = history.board() if history is not None else []
    rooms = _board(board, fleet=config is not None)
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


def _board(board: list[Latest], fleet: bool) -> str:
    if not board:
        return "<p>No Room collected yet: results show here after the first scrape.</p>"
    down = sum(1 for row in board if not row.result.up)
    summary = (
        f"<p>{len(board)} Rooms remembered: {down} down, {len(board) - down} up. The Rooms that are down "
        "first, then the rest; the most recently collected first within each.</p>"
    )
    module_header = "<th>module</th>" if fleet else ""
    rows = "".join(_board_row(row, fleet) for row in board[:MAX_ROWS])
    hidden = len(board) - MAX_ROWS
    more = f"<p>{hidden} more Rooms not shown.</p>\n" if hidden > 0 else ""
    return f"""{summary}
<table><tr><th>target</th>{module_header}<th>state</th><th>time (UTC)</th><th>duration</th><th>detail</th>\
<th>history</th></tr>
{rows}</table>
{more}"""


def _board_row(row: Latest, fleet: bool) -> str:
    result = row.result
    module = f"<td><code>{shown(row.module or '', MODULE_BYTES)}</code></td>" if fleet else ""
    return (
        f"<tr><td><code>{shown(row.target, TARGET_BYTES)}</code></td>{module}{_state(result)}"
        f"<td>{_when(result.at)}</td><td>{_duration(result.duration_seconds)}</td>"
        f"<td>{shown(result.detail, DETAIL_BYTES)}</td><td>{_room_link(row.target, row.module)}</td></tr>\n"
    )


def _state(result: Result) -> str:
    if result.up:
        return '<td class="up">up</td>'
    return f'<td class="down">down: {shown(result.reason, REASON_BYTES)}</td>'


def _when(at: float) -> str:
    if not (math.isfinite(at) and 0 <= at < 1e11):  # time.gmtime refuses what no clock gives
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _duration(seconds: float) -> str:
    """At most about a dozen characters, whatever the number."""
    return f"{seconds * 1000:.0f} ms" if 0 <= seconds < 100 else f"{seconds:.3g} s"


def _query(target: str, module: str | None) -> str | None:
    """A Room's query (`target=...&module=...`), or None when longer than LINK_QUERY_BYTES."""
    if len(target) + len(module or "") > LINK_QUERY_BYTES:  # quoting never shortens: spare the work
        return None
    fields = {"target": target} if module is None else {"target": target, "module": module}
    query = urllib.parse.urlencode(fields)
    return query if len(query) <= LINK_QUERY_BYTES else None


def _room_link(target: str, module: str | None) -> str:
    query = _query(target, module)
    if query is None:
        return "target too long to link"
    return f'<a href="room?{html.escape(query)}">last {RESULTS_SHOWN}</a>'


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
    state = '<span class="up">up</span>' if latest.up else '<span class="down">down</span>'
    probe = ""
    if fleet and room.module is not None:
        query = _query(room.target, room.module)
        if query is not None:
            probe = f' <a href="probe?{html.escape(query)}&amp;debug=true">probe now, with its trace</a>'
    rows = "".join(_result_row(result) for result in list(reversed(room.results))[:RESULTS_SHOWN])
    title = f"<code>{shown(room.target, ROOM_TARGET_BYTES)}</code>{_module_words(room.module)}"
    return f"""<h1>{title}: {state}</h1>
<p>Its last {RESULTS_SHOWN} results at most, newest first.{probe} <a href="./">All Rooms</a></p>
<table><tr><th>time (UTC)</th><th>duration</th><th>up</th><th>reason</th><th>detail</th></tr>
{rows}</table>"""


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
