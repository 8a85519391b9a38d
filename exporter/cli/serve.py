"""`serve`: the exporter itself, one Room from the flags or a fleet through `/probe` with --config.file."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click

from exporter.allocator import return_freed_memory
from exporter.cli.options import (
    BadInput,
    apply,
    listen_address_option,
    logging_options,
    option,
    web_server_options,
)
from exporter.cli.room_options import (
    collector_options,
    collectors_given,
    read_pin,
    require_supported_websocket_client,
    room_options,
    session_options,
)
from exporter.cli.running import EXIT_GRACE_SECONDS, leave_promptly, run_until_stopped
from exporter.fleet.config import ConfigError
from exporter.fleet.reload import ConfigHolder
from exporter.logs import setup_logging
from exporter.room import RoomTarget
from exporter.room.target import host_port
from exporter.web.app import ExporterApp
from exporter.web.config import WebConfigError, WebConfigWatcher
from exporter.web.server import ServerLimits, fit_open_file_limit, make_http_server
from exporter.web.settings import ExporterSettings

log = logging.getLogger("exporter")

GIL_SWITCH_SECONDS = 0.001
"""How long a thread may hold the GIL while others wait (Python's default is 5 ms). A scrape is a few dozen
short turns on the GIL between waits for the Room; when hostile Rooms keep the process busy, each turn
waits behind slices of parsing: under the hostile mix of tests/test_hostile_mix.py a healthy Room's probe
took a median of 0.05-0.22 s with 1 ms slices (0.09 s over four runs), 0.10-0.19 s with 5 ms (0.16 s), on
a shared two-core machine; about 2 ms alone (benchmarks/bench_scrape.py)."""


def serve_options(command: Callable[..., None]) -> Callable[..., None]:
    return apply(
        command,
        room_options,
        listen_address_option,
        web_server_options,
        session_options,
        collector_options,
        option(
            "--collector.process/--no-collector.process",
            "process_metrics",
            default=False,
            variable="COLLECTOR_PROCESS",
            help="Also export the Python process, platform and GC metrics.",
        ),
        option(
            "--config.file",
            "config_file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            variable="CONFIG_FILE",
            help="YAML with modules (PIN source, timeout, discovery) and allowed_targets, for a fleet "
            "of Rooms probed at /probe?target=HOST&module=NAME. With it, /metrics carries only the "
            "exporter's own metrics and --target/--pin/--pin-file are ignored. Reloaded on SIGHUP "
            "and POST /-/reload.",
        ),
        option(
            "--web.config.file",
            "web_config_file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            variable="WEB_CONFIG_FILE",
            help="Prometheus exporter-toolkit web config: TLS (tls_server_config) and basic auth "
            "(basic_auth_users, bcrypt hashes). Re-read when it changes.",
        ),
        logging_options,
    )


@click.command()
@serve_options
def serve(
    target: RoomTarget,
    pin: str | None,
    pin_file: Path | None,
    timeout: float,
    max_message_bytes: int,
    listen_address: tuple[str, int],
    read_header_timeout: float,
    max_connections: int,
    max_collections: int,
    sessions: bool,
    session_idle_timeout: float,
    max_sessions: int,
    process_metrics: bool,
    config_file: Path | None,
    web_config_file: Path | None,
    log_level: str,
    log_format: str,
    **collectors: bool,
) -> None:
    """Serve the Room's metrics, read at every scrape of /metrics (or of /probe with --config.file)."""
    setup_logging(log_level, log_format)
    return_freed_memory()
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    require_supported_websocket_client()
    web_config = load_web_config(web_config_file)
    config = load_config(config_file, timeout)
    settings = ExporterSettings(
        target=target,
        pin=read_pin(pin, pin_file) if config is None else None,
        timeout_seconds=timeout,
        process_metrics=process_metrics,
        max_message_bytes=max_message_bytes,
        sessions=sessions,
        session_idle_seconds=session_idle_timeout,
        max_sessions=max_sessions,
        collectors=collectors_given(collectors),
    )
    limits = ServerLimits(read_header_timeout, max_connections, max_collections)
    run_server(settings, listen_address, config=config, web_config=web_config, limits=limits)
    leave_promptly()  # nothing of ours is left to wait for: a thread stuck elsewhere must not hold the exit


def load_web_config(path: Path | None) -> WebConfigWatcher | None:
    """The watched web config, or a one-line start-up error naming the file, the key and the problem."""
    if path is None:
        return None
    try:
        return WebConfigWatcher(path)
    except WebConfigError as error:
        raise BadInput(f"invalid --web.config.file: {error}") from None


def load_config(path: Path | None, default_timeout: float) -> ConfigHolder | None:
    """The config file for multi-target mode, validated; says which single-target options it overrides."""
    if path is None:
        return None
    try:
        holder = ConfigHolder(path, default_timeout)
    except ConfigError as error:
        raise BadInput(f"invalid --config.file: {error}") from None
    context = click.get_current_context()
    ignored = [
        f"--{name.replace('_', '-')}"
        for name in ("target", "pin", "pin_file")
        if context.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    ]
    if ignored:
        log.warning(
            "ignored with --config.file: Rooms are probed through /probe with the config's modules",
            extra={"detail": ", ".join(ignored)},
        )
    config = holder.config
    if unscoped := config.unscoped_pin_modules():
        log.warning(
            "no allowed_targets: /probe connects to any host it is given, sending the module's PIN",
            extra={"file": str(path), "detail": f"modules {', '.join(unscoped)}"},
        )
    return holder


def _ignore_hangup() -> None:
    log.info(
        "SIGHUP ignored: there is no --config.file to reload (a --web.config.file is re-read when it changes)"
    )


def run_server(
    settings: ExporterSettings,
    listen_address: tuple[str, int],
    config: ConfigHolder | None = None,
    web_config: WebConfigWatcher | None = None,
    announce: Callable[[str], None] | None = None,
    limits: ServerLimits | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C; `announce` is told the metrics URL once the port is bound.

    Stopping: the server stops accepting and gives the answers in progress SHUTDOWN_DRAIN_SECONDS; then the
    collections still in flight are cancelled (their Room sockets shut down) and their threads, daemons, get
    EXIT_GRACE_SECONDS to end before this returns without them.
    """
    host, port = listen_address
    limits = limits or ServerLimits()
    fit_open_file_limit(limits, settings.max_sessions if settings.sessions or config is not None else 0)
    try:
        app = ExporterApp(settings, config)
        server = make_http_server(app, host, port, web_config, limits)
    except OSError as error:
        raise click.ClickException(
            f"cannot listen on {host or '*'}:{port}: {error.strerror or error}"
        ) from None
    bound_port = server.server_address[1]
    shown_host = host if host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    scheme = "https" if web_config is not None and web_config.current().tls is not None else "http"
    url = f"{scheme}://{host_port(shown_host, bound_port)}/metrics"
    serving = {"file": str(config.path)} if config is not None else {"target": str(settings.target)}
    log.info("exporter listening", extra={"address": f"{host or '*'}:{bound_port}", "url": url, **serving})
    if announce is not None:
        announce(url)
    hangup = config.reload if config is not None else _ignore_hangup

    def on_hangup() -> None:
        """From the signal handler: only start a thread; reading files and logging happen there."""
        threading.Thread(target=hangup, name="sighup", daemon=True).start()

    try:
        run_until_stopped(server.serve_forever, on_hangup, server.request_stop)
    finally:
        # The drain is over: what still waits on a Room would wait to its deadline.
        cancelled = app.sessions.cancel_all()
        server.server_close()
        if cancelled:
            log.info(
                "stopping: the drain time is over; collections still waiting on a Room were cancelled",
                extra={"collections": cancelled},
            )
        left = server.wait_idle(EXIT_GRACE_SECONDS)
        if left:
            log.warning(
                "stopping without waiting for requests still in progress (a name lookup cannot be "
                "interrupted)",
                extra={"requests": left},
            )
        log.info("exporter stopped", extra={"address": f"{host or '*'}:{bound_port}"})
