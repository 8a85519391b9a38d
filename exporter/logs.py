"""Log lines as logfmt or JSON, one line per event, with the structured fields a collection failure carries.

Only fields the code passes through `extra=` are written, and no code passes the PIN.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime

FORMATS = ("logfmt", "json")
LEVELS = ("debug", "info", "warning", "error")
FIELDS = ("target", "reason", "detail", "address", "url", "file", "traceback")
"""The `extra=` fields a log line may carry, in the order they are written."""


def _fields(record: logging.LogRecord) -> dict[str, str]:
    stamp = (
        datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
    fields = {
        "ts": stamp,
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for name in FIELDS:
        if hasattr(record, name):
            fields[name] = str(getattr(record, name))
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        fields["error"] = repr(error)
        # Still one line: logfmt and JSON both escape the newlines.
        fields["traceback"] = "".join(traceback.format_exception(error)).rstrip()
    return fields


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' "=\\') and value.isprintable():
        return value
    return json.dumps(value, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), ensure_ascii=False)


def setup_logging(level: str, log_format: str) -> None:
    """Send every log line to stderr in the chosen format; quiet the libraries' chatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("websocket", "websockets"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
