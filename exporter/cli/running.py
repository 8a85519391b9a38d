"""Running a server in the foreground until SIGTERM or Ctrl-C: the one place the commands handle signals."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable


def run_until_stopped(serve_forever: Callable[[], None], on_hangup: Callable[[], None] | None = None) -> None:
    """Call `serve_forever` until SIGTERM (exit 0) or Ctrl-C; `on_hangup` runs on SIGHUP when given.

    SIGTERM raises SystemExit in the main thread, so `finally` blocks around this call run. `on_hangup`
    is called from the signal handler: it should only start work (a thread), not do it. Without it SIGHUP
    keeps its default action (the process ends), which only `emulate` relies on.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if on_hangup is not None:
        signal.signal(signal.SIGHUP, lambda *_: on_hangup())
    with contextlib.suppress(KeyboardInterrupt):
        serve_forever()
