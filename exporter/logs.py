"""Log lines as logfmt or JSON, one line per event, with the structured fields the code passes.

Every field the code passes through `extra=` is written, and no code passes the PIN. A field may carry a
Room's own words (an error message, a target), so no line carries a control, bidi or line-separator
character as itself: each is written as JSON's `\\uXXXX` escape, in both formats (text.json_safe).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime

from exporter.text import json_safe

FORMATS = ("logfmt", "json")
LEVELS = ("debug", "info", "warning", "error")
FIELDS = ("target", "reason", "detail", "address", "url", "file", "traceback")
"""The usual `extra=` fields, written first and in this order; any other `extra=` field follows them."""
OWN_FIELDS = ("ts", "level", "logger", "msg", "error")
"""What every line may carry besides `extra=`; an `extra=` field of one of these names is written as
`extra_NAME` rather than overwrite it."""
RECORD_ATTRIBUTES = frozenset(
    {*logging.LogRecord("", 0, "", 0, "", None, None).__dict__, "message", "asctime"}
)
"""What the logging module itself puts on a record; everything else on it came through `extra=`."""


def _extras(record: logging.LogRecord) -> dict[str, object]:
    given = {name: value for name, value in record.__dict__.items() if name not in RECORD_ATTRIBUTES}
    ordered = {name: given.pop(name) for name in FIELDS if name in given}
    return ordered | given


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
    for name, value in _extras(record).items():
        fields[f"extra_{name}" if name in OWN_FIELDS else name] = str(value)
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        fields["error"] = repr(error)
        # Still one line: logfmt and JSON both escape the newlines.
        fields["traceback"] = "".join(traceback.format_exception(error)).rstrip()
    return fields


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' "=\\') and value.isprintable():
        return value
    return json_safe(json.dumps(value, ensure_ascii=False))


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json_safe(json.dumps(_fields(record), ensure_ascii=False))


def setup_logging(level: str, log_format: str) -> None:
    """Send every log line to stderr in the chosen format; quiet the libraries' chatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("websocket", "websockets"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
