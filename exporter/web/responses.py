"""The one way the exporter answers with plain text: every error, every short status."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def plain_text(
    start_response: StartResponse, status: str, text: str, headers: tuple[tuple[str, str], ...] = ()
) -> list[bytes]:
    """Answer `status` with `text` (one line, newline-terminated by the caller) as UTF-8 plain text."""
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *headers])
    return [text.encode()]
