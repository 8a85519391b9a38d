"""glibc's allocator told to give freed memory back, so a burst's memory returns after it.

Large Room messages (2-4 MiB) and large answers are allocated and freed many times by many threads. glibc
serves allocations above its mmap threshold with mmap and returns them when freed, but it raises that
threshold after the first large block is freed (up to 32 MiB), so later messages come from per-thread heaps
whose freed memory is kept: RSS stays at the burst's peak. A fixed threshold of 128 KiB (glibc's own
starting value) keeps every large buffer in its own mapping, returned to the system when it is freed; two
arenas instead of eight per core keep what small allocations leave behind from spreading over many heaps
(every thread holds the GIL while it allocates, so they contend little).

After a burst (many connections closed), the HTTP server also asks glibc to trim its heaps (`trim`).
Elsewhere than glibc (musl), nothing is changed.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
"""mallopt's parameter numbers (malloc.h); setting the threshold also stops glibc moving it."""
MMAP_THRESHOLD_BYTES = 128 * 1024
ARENA_MAX = 2


@functools.cache
def _glibc(function: str) -> Any:
    """A function of glibc's allocator, or None elsewhere (musl has neither mallopt nor malloc_trim).

    Looked up once, in the symbols the process already has (no `find_library`, which runs `ldconfig`):
    `trim` is called from the HTTP server's event loop."""
    try:
        return getattr(ctypes.CDLL(None), function, None)
    except OSError:
        return None


def return_freed_memory() -> bool:
    """Set glibc's mmap threshold and arena count as above; True when glibc took both."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        log.debug("no glibc mallopt: the allocator keeps its defaults")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_ARENA_MAX, ARENA_MAX))


def trim() -> None:
    """Give the free memory at the ends of glibc's heaps back to the system (after a burst is over)."""
    malloc_trim = _glibc("malloc_trim")
    if malloc_trim is not None:
        malloc_trim.argtypes = [ctypes.c_size_t]
        malloc_trim(0)
