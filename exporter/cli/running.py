"""Running a server in the foreground until SIGTERM or Ctrl-C: the one place the commands handle signals."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("exporter")

EXIT_GRACE_SECONDS = 1.0
"""Once a stopped server has cleaned up: how long the interpreter may take to exit before it is made to."""


class Terminated(SystemExit):
    """SIGTERM, raised in the main thread by the handler: a SystemExit, so that asyncio's loop lets it
    through (it passes on no other exception raised in a callback) and `finally` blocks run."""


def _terminate(*_: object) -> None:
    raise Terminated(0)


def run_until_stopped(
    serve_forever: Callable[[], None],
    on_hangup: Callable[[], None] | None = None,
    on_stop: Callable[[], object] | None = None,
) -> None:
    """Call `serve_forever` until SIGTERM or Ctrl-C, then return (the command exits 0 after its clean-up);
    `on_hangup` runs on SIGHUP when given.

    With `on_stop` (a server's `request_stop`), SIGTERM and Ctrl-C call it and `serve_forever` returns by
    itself once drained: nothing is raised into whatever the main thread was running (an event loop's task
    would end with it and be logged with a traceback). Without it, they raise in the main thread.
    `on_hangup` and `on_stop` are called from the signal handler: they should only start work, not do it.
    Without `on_hangup` SIGHUP keeps its default action (the process ends), which only `emulate` relies on.
    A second SIGTERM or Ctrl-C ends the process at once (exit 0).
    """
    if on_stop is None:
        signal.signal(signal.SIGTERM, _terminate)
    else:

        def stop(*_: object) -> None:
            signal.signal(signal.SIGTERM, _terminate)  # a second one does not wait for the drain
            signal.signal(signal.SIGINT, _terminate)
            on_stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    if on_hangup is not None:
        signal.signal(signal.SIGHUP, lambda *_: on_hangup())
    with contextlib.suppress(Terminated, KeyboardInterrupt):
        serve_forever()


def leave_promptly(seconds: float = EXIT_GRACE_SECONDS) -> None:
    """Make sure the process ends within `seconds` from now: the last resort of a stopping command.

    The exporter's own threads are daemons and do not hold the exit; if something else does (a non-daemon
    thread stuck where nothing can interrupt it, such as getaddrinfo), a daemon timer logs one line naming
    what is left, flushes the logs and leaves with os._exit(0). When the interpreter exits first, the timer
    dies with it unseen.
    """

    def leave() -> None:
        main = threading.main_thread()  # exiting: it waits for the others
        left = [t.name for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not main]
        log.warning(
            f"exiting without waiting for {len(left)} threads that did not end: {', '.join(left) or '-'}"
        )
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    timer = threading.Timer(seconds, leave)
    timer.daemon = True
    timer.name = "exit-timer"
    timer.start()
