"""The landing page at `/`: what runs here and where its metrics are, for a person with a browser."""

from __future__ import annotations

import html

from exporter import __version__
from exporter.fleet.reload import ConfigHolder
from exporter.web.settings import ExporterSettings


def landing_page(settings: ExporterSettings, config: ConfigHolder | None = None) -> bytes:
    """A small page naming the exporter, its version and its target or modules (never a PIN)."""
    if config is not None:
        return _fleet_landing_page(config)
    target = html.escape(str(settings.target))
    auth = "PIN configured" if settings.pin is not None else "no PIN, unsecured auth"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TrueConf Room exporter</title></head>
<body>
<h1>TrueConf Room exporter</h1>
<p>Version {html.escape(__version__)}. Target: <code>{target}</code> ({auth}),
timeout {settings.timeout_seconds:g}s.</p>
<ul>
<li><a href="metrics">/metrics</a>: the Room's outgoing file requests, collected at every scrape</li>
<li><a href="healthz">/healthz</a>: liveness of the exporter itself</li>
</ul>
</body></html>
""".encode()


def _pin_text(source: str) -> str:
    """Where a module's PIN comes from, in words; never the PIN."""
    return "no PIN (unsecured auth)" if source == "none" else f"PIN from {html.escape(source)}"


def _fleet_landing_page(holder: ConfigHolder) -> bytes:
    config = holder.config
    modules = "".join(
        f"<li><code>{html.escape(m.name)}</code>: {_pin_text(m.pin_source)}, timeout "
        f"{m.timeout_seconds:g}s, discovery {'on' if m.discovery else 'off'}</li>"
        for m in config.modules.values()
    )
    allowed = (
        "any target (no allowed_targets)"
        if config.allowed_targets is None
        else ", ".join(f"<code>{html.escape(p)}</code>" for p in config.allowed_targets)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TrueConf Room exporter</title></head>
<body>
<h1>TrueConf Room exporter</h1>
<p>Version {html.escape(__version__)}. Config file <code>{html.escape(str(holder.path))}</code>.</p>
<p>Modules:</p><ul>{modules}</ul>
<p>Targets allowed: {allowed}.</p>
<ul>
<li><code>/probe?target=HOST[:PORT]&amp;module=NAME</code>: one Room's outgoing file requests, collected at
every probe (the target must be in the allow-list above)</li>
<li><a href="metrics">/metrics</a>: the exporter's own metrics</li>
<li><a href="healthz">/healthz</a>: liveness of the exporter itself</li>
<li><code>POST /-/reload</code>: re-read the config file (as SIGHUP does)</li>
</ul>
</body></html>
""".encode()
