"""Reading a Room's PIN from a file: one rule for `--pin-file`, a module's `pin_file` and `*_FILE` variables.

The file is read as UTF-8 and stripped (editors add a newline); an empty file is a mistake, not "no PIN".
Messages name the file, never its contents.

A PIN file that others can read is used, but warned about once per file and mode, as ssh warns of a private
key: by every user when others may read it, by a group when the file's group is not the exporter's own. A
file of the exporter's own group (a Kubernetes Secret mounted with `fsGroup` and mode 0440, a file in a
user's private group) is not warned about: the exporter cannot tell who else is in a group, and these are
the cases where group access is how the file is meant to reach it.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class PinFileError(ValueError):
    """The PIN file cannot be used; the message says why in a few words."""


class PinFiles:
    """Reads the PIN files of one process (its flags, and every load of its config): a file others can read
    is warned about once per file and mode, however often it is read again. Thread-safe."""

    def __init__(self) -> None:
        self._warned: set[tuple[str, int, int]] = set()
        self._lock = threading.Lock()

    def read(self, path: Path) -> str:
        """The stripped PIN in `path`; PinFileError when it is missing, unreadable or empty. Warns (once)
        when the file is readable by others."""
        try:
            with path.open("rb") as file:
                status = os.fstat(file.fileno())
                pin = file.read().decode("utf-8").strip()
        except FileNotFoundError:
            raise PinFileError(f"cannot read {path}: it does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            raise PinFileError(f"cannot read {path} ({getattr(error, 'strerror', None) or error})") from None
        if not pin:
            raise PinFileError(f"{path} is empty; a Room without a PIN needs no PIN file")
        self._warn_if_readable_by_others(path, status)
        return pin

    def _warn_if_readable_by_others(self, path: Path, status: os.stat_result) -> None:
        """One warning per file and mode, naming the file and its mode, never its contents."""
        who = readable_by(status)
        if who is None:
            return
        mode = stat.S_IMODE(status.st_mode)
        with self._lock:
            key = (str(path), status.st_ino, mode)
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning(f"PIN file {path} is readable by {who} (mode {mode:04o}); chmod 600 it")


def readable_by(status: os.stat_result) -> str | None:
    """Who besides its owner (and root) may read a file with this status: 'others', 'group N', or None."""
    mode = stat.S_IMODE(status.st_mode)
    if mode & stat.S_IROTH:
        return "others"
    if mode & stat.S_IRGRP and status.st_gid != os.getgid():
        return f"group {status.st_gid}"
    return None
