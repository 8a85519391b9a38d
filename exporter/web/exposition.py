"""Metric families as prometheus_client writes them, with the text of each family's shape prepared once.

prometheus_client formats every sample anew on every scrape (label names validated and escaped, labels sorted,
each line put together): about 1 ms for a Room's 72 samples, a fifth of a warm `/probe`'s CPU. A Room's
families come in few shapes (name, help, type and label sets), so the text of each shape is written once by
prometheus_client's own encoder (the one it chooses for the scrape's `Accept` header) with made-up values, and
kept as the fixed text around the values; a scrape then only formats its values, with the library's own
`floatToGoString`. The library stays the authority on the format, at every version: a shape whose text does
not split that way (a timestamp, an exemplar, a sample line the split does not recognise) is written by the
encoder itself, every time. `tests/test_exposition_text.py` holds the result byte for byte to the library's.

Content negotiation and the choice of gzip are the library's too (`choose_encoder`, `gzip_accepted`; the
level is ours); `name[]` filtering is left to the library's WSGI app.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.web.responses import StartResponse, WSGIApp

MAX_SHAPES = 1024
"""Prepared shapes kept (the oldest dropped first): a Room's version label is the one open-ended part."""

GZIP_LEVEL = 1
"""prometheus_client compresses at 9: a Room's ~8 KB answer then costs 126 us against 63 us at 1, for 1552
bytes against 1759. Any level is the same gzip to Prometheus."""

Encoder = Callable[[Collector], bytes]
format_value: Callable[[float], str] = floatToGoString  # the library's own; it leaves it unannotated
ShapeKey = tuple[str, str, str, str, str, tuple[tuple[str, tuple[tuple[str, str], ...]], ...]]


class _Families(Collector):
    """A fixed list of families, to hand to an encoder."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class _Shape:
    """One family's text with its values left out: the header lines, then one prefix per sample."""

    __slots__ = ("header", "prefixes")

    def __init__(self, header: str, prefixes: list[str]) -> None:
        self.header, self.prefixes = header, prefixes

    def text(self, family: Metric) -> str:
        lines = [self.header]
        for prefix, sample in zip(self.prefixes, family.samples, strict=True):
            lines.append(prefix)
            lines.append(format_value(sample.value))
            lines.append("\n")
        return "".join(lines)


class PreparedText:
    """Thread-safe: any number of scrapes write through it at once."""

    def __init__(self, max_shapes: int = MAX_SHAPES) -> None:
        self.max_shapes = max_shapes
        self._shapes: dict[ShapeKey, _Shape | None] = {}
        self._trailers: dict[str, str] = {}
        self._lock = threading.Lock()

    def encode(self, families: Iterable[Metric], encoder: Encoder, content_type: str) -> bytes:
        """What `encoder(registry)` returns for a registry collecting `families`, byte for byte."""
        trailer = self._trailer(encoder, content_type)
        parts = []
        for family in families:
            shape = self._shape(family, encoder, content_type, trailer)
            if shape is None:
                parts.append(_encoded(encoder, [family], trailer))
            else:
                parts.append(shape.text(family))
        parts.append(trailer)
        return "".join(parts).encode()

    def __len__(self) -> int:
        return len(self._shapes)

    def _trailer(self, encoder: Encoder, content_type: str) -> str:
        """What the encoder writes after every family (OpenMetrics' `# EOF`), from an empty registry."""
        trailer = self._trailers.get(content_type)
        if trailer is None:
            trailer = self._trailers[content_type] = encoder(_Families([])).decode()
        return trailer

    def _shape(self, family: Metric, encoder: Encoder, content_type: str, trailer: str) -> _Shape | None:
        if any(_has_extras(sample) for sample in family.samples):
            return None
        key: ShapeKey = (
            content_type,
            family.name,
            family.type,
            family.documentation,
            family.unit,
            tuple((sample.name, tuple(sample.labels.items())) for sample in family.samples),
        )
        try:
            return self._shapes[key]  # a dict read is atomic: no lock on the common path
        except KeyError:
            pass
        shape = _prepare(family, encoder, trailer)
        with self._lock:
            self._shapes[key] = shape
            while len(self._shapes) > self.max_shapes:  # the oldest first: a lookup never takes the lock
                del self._shapes[next(iter(self._shapes))]
        return shape


def _has_extras(sample: Any) -> bool:
    """A timestamp, an exemplar or a native histogram: written by the encoder itself, never prepared."""
    return bool(sample.timestamp is not None or sample.exemplar or getattr(sample, "native_histogram", None))


def _encoded(encoder: Encoder, families: list[Metric], trailer: str) -> str:
    text = encoder(_Families(families)).decode()
    return text[: len(text) - len(trailer)] if trailer and text.endswith(trailer) else text


def _prepare(family: Metric, encoder: Encoder, trailer: str) -> _Shape | None:
    """The family's text split around its values; None when it does not split so.

    Written with sample i valued i + 1, so each line is proven to carry its own sample, in order (an
    encoder that moved a sample elsewhere, as the text format does with `_created`, is caught here)."""
    numbered = Metric(family.name, family.documentation, family.type, family.unit)
    for number, sample in enumerate(family.samples, start=1):
        numbered.add_sample(sample.name, dict(sample.labels), number)
    text = encoder(_Families([numbered])).decode()
    if not text.endswith(trailer):
        return None
    lines = text[: len(text) - len(trailer)].splitlines(keepends=True)
    header_lines = 0
    while header_lines < len(lines) and lines[header_lines].startswith("#"):
        header_lines += 1
    samples = lines[header_lines:]
    if len(samples) != len(family.samples):
        return None
    prefixes = []
    for number, line in enumerate(samples, start=1):
        value = f" {format_value(number)}\n"
        if not line.endswith(value):
            return None
        prefixes.append(line[: -len(value)] + " ")
    return _Shape("".join(lines[:header_lines]), prefixes)


prepared_text = PreparedText()
"""The process's prepared shapes, shared by every scrape."""


def metrics_answer(
    registry: CollectorRegistry, environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    """`registry` answered as prometheus_client's WSGI app answers it (format by `Accept`, gzip by
    `Accept-Encoding`, `name[]` filters), through the prepared shapes."""
    if "name[]" in parse_qs(environ.get("QUERY_STRING", "")):
        library_app: WSGIApp = make_wsgi_app(registry)  # prometheus_client types it as a bare `Callable`
        return library_app(environ, start_response)
    encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT") or "")
    output = prepared_text.encode(registry.collect(), encoder, content_type)
    headers = [("Content-Type", content_type)]
    if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING") or ""):
        output = gzip.compress(output, compresslevel=GZIP_LEVEL)
        headers.append(("Content-Encoding", "gzip"))
    start_response("200 OK", headers)
    return [output]
