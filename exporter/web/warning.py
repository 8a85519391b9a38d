"""A warning a flood cannot multiply: one line when a condition starts, then at most one per interval."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

INTERVAL_SECONDS = 60.0


class RateLimitedWarning:
    """One warning line when a condition starts, then at most one per interval with the count in between.

    Each line carries `count`: how many times the condition came since the previous line (1 on the first).
    Safe to call from several threads.
    """

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        interval: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.message, self.interval, self.clock = logger, message, interval, clock
        self.count = 0
        self.last = -interval
        self._lock = threading.Lock()

    def __call__(self, **extra: Any) -> None:
        with self._lock:
            self.count += 1
            now = self.clock()
            if now - self.last < self.interval:
                return
            count, self.last, self.count = self.count, now, 0
        self.logger.warning(self.message, extra={**extra, "count": count})
