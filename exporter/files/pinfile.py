"""Reading a Room's PIN from a file: one rule for `--pin-file`, a module's `pin_file` and `*_FILE` variables.

The file is read as UTF-8 and stripped (editors add a newline); an empty file is a mistake, not "no PIN".
Messages name the file, never its contents.
"""

from __future__ import annotations

from pathlib import Path


class PinFileError(ValueError):
    """The PIN file cannot be used; the message says why in a few words."""


def read_pin_file(path: Path) -> str:
    """The stripped PIN in `path`; PinFileError when it is missing, unreadable or empty."""
    try:
        pin = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise PinFileError(f"cannot read {path}: it does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PinFileError(f"cannot read {path} ({getattr(error, 'strerror', None) or error})") from None
    if not pin:
        raise PinFileError(f"{path} is empty; a Room without a PIN needs no PIN file")
    return pin
