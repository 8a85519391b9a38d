"""The routes of the exporter's WSGI app: `/`, `/room`, `/metrics`, `/probe`, `/-/reload`, `/healthz`.

Every `/metrics` or `/probe` request builds a fresh registry around a fresh collection, so overlapping scrapes
never share state. The answer is prometheus_client's own text (text or OpenMetrics by `Accept`, gzip by
`Accept-Encoding`).

Without `--config.file`, `/metrics` collects the one Room from the flags. With it, `/metrics` carries only the
exporter's own metrics (build info, config reload status, process metrics when enabled) and Rooms are
collected through `/probe?target=...&module=...`; `POST /-/reload` re-reads the config file.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from exporter.collect.collection import Collection, collect_room
from exporter.collect.families import BuildInfoCollector, RoomCollector
from exporter.collect.history import RecentResults
from exporter.collect.inflight import SharedCollections
from exporter.collect.session_metrics import SessionCollector
from exporter.fleet.config import Module
from exporter.fleet.probe import (
    MAX_CHECK_LOOKUPS_IN_FLIGHT,
    ProbeRefusedError,
    parse_query,
    resolve_probe,
    wants_debug,
)
from exporter.fleet.reload import ConfigHolder, ReloadCollector
from exporter.methods import methods_for
from exporter.room import RoomRequest, RoomTarget
from exporter.room.connect import Resolver
from exporter.room.sessions import SessionPool
from exporter.room.trace import Trace
from exporter.web.pages import debug_probe_page, landing_page, room_page
from exporter.web.responses import StartResponse, plain_text
from exporter.web.settings import ExporterSettings

SCRAPE_TIMEOUT_HEADER = "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"
SCRAPE_TIMEOUT_MARGIN_SECONDS = 0.5
"""Left for the exporter to answer after the Room's deadline, inside Prometheus's scrape timeout."""
MIN_SCRAPE_DEADLINE_SECONDS = 0.1
"""The shortest deadline a tight scrape-timeout header can leave a collection."""
GZIP_LEVEL = 1
"""prometheus_client's WSGI app compresses at 9; any level is the same gzip to Prometheus, 1 the cheapest."""


def effective_timeout(configured: float, scrape_timeout_header: str | None) -> float:
    """The collection deadline: the configured timeout, shortened to fit Prometheus's scrape timeout."""
    if not scrape_timeout_header:
        return configured
    try:
        scrape_timeout = float(scrape_timeout_header)
    except ValueError:
        return configured
    if math.isnan(scrape_timeout) or scrape_timeout <= 0:
        return configured
    return max(MIN_SCRAPE_DEADLINE_SECONDS, min(configured, scrape_timeout - SCRAPE_TIMEOUT_MARGIN_SECONDS))


def metrics_answer(
    registry: CollectorRegistry, environ: dict[str, Any], start_response: StartResponse
) -> list[bytes]:
    """`registry` as prometheus_client's WSGI app answers it, for GET and HEAD alike: the format its
    `choose_encoder` picks for `Accept`, only the families `name[]` names, gzip when `Accept-Encoding`
    allows."""
    encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT") or "")
    names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
    output = encoder(registry.restricted_registry(names) if names else registry)
    headers = [("Content-Type", content_type)]
    if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING") or ""):
        output = gzip.compress(output, compresslevel=GZIP_LEVEL)
        headers.append(("Content-Encoding", "gzip"))
    start_response("200 OK", headers)
    return [output]


class ExporterApp:
    """The WSGI application; `config` switches it from the one flag-given Room to the multi-target mode."""

    def __init__(self, settings: ExporterSettings, config: ConfigHolder | None = None) -> None:
        self.settings = settings
        self.config = config
        self.history = RecentResults()
        """The latest results of every Room collected, for the status page at `/`."""
        self.sessions = SessionPool(
            settings.session_idle_seconds, settings.max_sessions, settings.max_message_bytes
        )
        """The Rooms' open sessions (when sessions are on); a successful reload closes them all."""
        self.in_flight = SharedCollections()
        """The collections running now, shared by the scrapes of the same Room that arrive meanwhile."""
        self.check_lookups = Resolver(limit=MAX_CHECK_LOOKUPS_IN_FLIGHT)
        """Looks up the names /probe checks against the allow-list's IP entries: places of their own, so
        probes of slow names never hold up the collections' lookups (the session pool's resolver)."""
        if config is not None:
            config.after_reload.append(self.sessions.close_all)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/-/reload":
            return self.reload(method, start_response)
        if method not in ("GET", "HEAD"):
            return plain_text(start_response, "405 Method Not Allowed", "only GET and HEAD are supported\n")
        if path == "/metrics":
            return self.metrics(environ, start_response)
        if path == "/probe":
            return self.probe(environ, start_response)
        if path == "/healthz":
            return plain_text(start_response, "200 OK", "ok\n")
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing_page(self.settings, self.config, self.history)]
        if path == "/room":
            return self.room(environ, start_response)
        return plain_text(start_response, "404 Not Found", "not found; try /metrics\n")

    def room(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """`/room?target=...&module=...`: one Room's last results, linked from its row on `/`."""
        status, page = room_page(self.history, environ.get("QUERY_STRING", ""), fleet=self.config is not None)
        start_response(status, [("Content-Type", "text/html; charset=utf-8")])
        return [page]

    def collect(
        self,
        target: RoomTarget,
        pin: str | None,
        timeout: float,
        module: Module | None = None,
        trace: Trace | None = None,
    ) -> Collection:
        """One collection, for /metrics and /probe alike: the one place collection settings are applied
        (a module's own over the flags), and the one place its result is remembered for the status page.
        Scrapes of the same Room at once share one collection; a debug probe (`trace`) runs its own."""
        settings = self.settings
        collectors = dict(settings.collectors) | dict(module.collectors if module else ())
        use_sessions = settings.sessions if module is None or module.sessions is None else module.sessions
        request = RoomRequest(target, pin, methods_for(collectors), settings.max_message_bytes, use_sessions)

        def collect() -> Collection:
            return collect_room(request, timeout, pool=self.sessions, trace=trace)

        if trace is not None:
            collection, ran = collect(), True
        else:
            collection, ran = self.in_flight.collect(request, target, timeout, collect)
        if ran:
            self.history.record(collection, module.name if module else None)
        return collection

    def probe(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """One Room named by the query, with its module's credentials; the same families as `/metrics`."""
        if self.config is None:
            return plain_text(
                start_response,
                "404 Not Found",
                "/probe needs --config.file (modules and allowed_targets); without it, use /metrics\n",
            )
        scrape_timeout = environ.get(SCRAPE_TIMEOUT_HEADER)

        def deadline_for(module: Module) -> float:
            return effective_timeout(module.timeout_seconds, scrape_timeout)

        query = parse_query(environ.get("QUERY_STRING", ""))
        try:
            debug = wants_debug(query)
            module, target = resolve_probe(self.config.config, query, self.check_lookups, deadline_for)
        except ProbeRefusedError as refused:
            return plain_text(start_response, refused.status, f"{refused.reason}\n")
        timeout = deadline_for(module)
        registry = CollectorRegistry(auto_describe=False)
        if debug:
            trace = Trace()
            collection = self.collect(target, module.pin, timeout, module, trace)
            registry.register(RoomCollector(lambda: collection))
            page = debug_probe_page(target, module, timeout, trace, generate_latest(registry).decode())
            return plain_text(start_response, "200 OK", page)
        registry.register(RoomCollector(lambda: self.collect(target, module.pin, timeout, module)))
        return metrics_answer(registry, environ, start_response)

    def reload(self, method: str, start_response: StartResponse) -> Iterable[bytes]:
        if method != "POST":
            return plain_text(
                start_response,
                "405 Method Not Allowed",
                "use POST to reload the config file\n",
                headers=(("Allow", "POST"),),
            )
        if self.config is None:
            return plain_text(
                start_response,
                "400 Bad Request",
                "nothing to reload: serve was started without --config.file\n",
            )
        error = self.config.reload()
        if error is not None:
            return plain_text(
                start_response,
                "500 Internal Server Error",
                f"reload failed, the previous config stays in use: {error}\n",
            )
        return plain_text(start_response, "200 OK", "config reloaded\n")

    def metrics(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        settings = self.settings
        timeout = effective_timeout(settings.timeout_seconds, environ.get(SCRAPE_TIMEOUT_HEADER))
        registry = CollectorRegistry(auto_describe=False)
        if self.config is None:
            registry.register(RoomCollector(lambda: self.collect(settings.target, settings.pin, timeout)))
        else:
            registry.register(ReloadCollector(self.config))
        registry.register(BuildInfoCollector())
        registry.register(SessionCollector(self.sessions))
        if settings.process_metrics:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        return metrics_answer(registry, environ, start_response)
