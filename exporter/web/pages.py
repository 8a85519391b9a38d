"""The status page at `/`: what runs here, and the latest results of every Room collected, newest first.

An operator of many Rooms reads why a Room is down here before reaching for curl. Nothing on the page is a
secret: targets, module names, where a PIN comes from (never the PIN), timings, reasons and messages.
"""

from __future__ import annotations

import html
import time
import urllib.parse

from exporter import __version__
from exporter.collect.history import RecentResults, Result, RoomHistory
from exporter.fleet.config import Module
from exporter.fleet.reload import ConfigHolder
from exporter.room import RoomTarget
from exporter.room.trace import Trace
from exporter.web.settings import ExporterSettings

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; }
table { border-collapse: collapse; margin-bottom: 1.2em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
.up { color: #060; } .down { color: #a00; font-weight: bold; }
"""


def landing_page(
    settings: ExporterSettings, config: ConfigHolder | None = None, history: RecentResults | None = None
) -> bytes:
    """The page for a person with a browser: the exporter, its Room or modules, and recent results."""
    about = _fleet_about(config) if config is not None else _single_about(settings)
    rooms = history.rooms() if history is not None else []
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TrueConf Room exporter</title>
<style>{STYLE}</style></head>
<body>
<h1>TrueConf Room exporter</h1>
{about}
<h2>Recent results</h2>
{_results(rooms, fleet=config is not None)}
</body></html>
""".encode()


def _single_about(settings: ExporterSettings) -> str:
    target = html.escape(str(settings.target))
    auth = "PIN configured" if settings.pin is not None else "no PIN, unsecured auth"
    return f"""<p>Version {html.escape(__version__)}. Target: <code>{target}</code> ({auth}),
timeout {settings.timeout_seconds:g}s.</p>
<ul>
<li><a href="metrics">/metrics</a>: the Room's outgoing file requests, collected at every scrape</li>
<li><a href="healthz">/healthz</a>: liveness of the exporter itself</li>
</ul>"""


def _pin_words(source: str) -> str:
    """Where a module's PIN comes from, in words; never the PIN."""
    return "no PIN (unsecured auth)" if source == "none" else f"PIN from {source}"


def _pin_text(source: str) -> str:
    return html.escape(_pin_words(source))


def _fleet_about(holder: ConfigHolder) -> str:
    config = holder.config
    modules = "".join(
        f"<li><code>{html.escape(m.name)}</code>: {_pin_text(m.pin_source)}, timeout "
        f"{m.timeout_seconds:g}s, discovery {'on' if m.discovery else 'off'}</li>"
        for m in config.modules.values()
    )
    allowed = (
        "any target (no allowed_targets)"
        if config.allowed_targets is None
        else ", ".join(f"<code>{html.escape(str(p))}</code>" for p in config.allowed_targets)
    )
    path = html.escape(str(holder.path))
    return f"""<p>Version {html.escape(__version__)}. Config file <code>{path}</code>.</p>
<p>Modules:</p><ul>{modules}</ul>
<p>Targets allowed: {allowed}.</p>
<ul>
<li><code>/probe?target=HOST[:PORT]&amp;module=NAME</code>: one Room's outgoing file requests, collected at
every probe (the target must be in the allow-list above)</li>
<li><a href="metrics">/metrics</a>: the exporter's own metrics</li>
<li><a href="healthz">/healthz</a>: liveness of the exporter itself</li>
<li><code>POST /-/reload</code>: re-read the config file (as SIGHUP does)</li>
</ul>"""


def _results(rooms: list[RoomHistory], fleet: bool) -> str:
    if not rooms:
        return "<p>No Room collected yet: results show here after the first scrape.</p>"
    return "\n".join(_room_table(room, fleet) for room in rooms)


def _room_table(room: RoomHistory, fleet: bool) -> str:
    latest = room.results[-1]
    state = '<span class="up">up</span>' if latest.up else f'<span class="down">down ({latest.reason})</span>'
    title = f"<code>{html.escape(room.target)}</code>"
    if room.module is not None:
        title += f", module <code>{html.escape(room.module)}</code>"
    links = ""
    if fleet and room.module is not None:
        query = urllib.parse.urlencode({"target": room.target, "module": room.module})
        links = f' <a href="probe?{html.escape(query)}&amp;debug=true">probe now, with its trace</a>'
    rows = "".join(_row(result) for result in reversed(room.results))
    return f"""<h3>{title}: {state}{links}</h3>
<table><tr><th>time (UTC)</th><th>duration</th><th>up</th><th>reason</th><th>detail</th></tr>
{rows}</table>"""


def _row(result: Result) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(result.at))
    return (
        f"<tr><td>{when}</td><td>{result.duration_seconds * 1000:.0f} ms</td>"
        f"<td>{'1' if result.up else '0'}</td><td>{html.escape(result.reason)}</td>"
        f"<td>{html.escape(result.detail)}</td></tr>\n"
    )


def debug_probe_page(target: RoomTarget, module: Module, timeout: float, trace: Trace, metrics: str) -> str:
    """`/probe?...&debug=true`: each phase with its time and outcome, then the metrics the probe exposes."""
    header = [
        f"Probe of {target} with module {module.name} ({_pin_words(module.pin_source)}), "
        f"deadline {timeout:g}s",
        "",
    ]
    return "\n".join([*header, *trace.lines(), "", "Metrics:", metrics.rstrip(), ""])
