"""Metric families as prometheus_client writes them, with the text of each family's shape prepared once.

prometheus_client formats every sample anew on every scrape (label names validated and escaped, labels sorted,
each line put together): about 1 ms for a Room's 73 samples, a fifth of a warm `/probe`'s CPU. A Room's
families come in few shapes (name, help, type and the labels of each series), so the text of each shape is
written once by prometheus_client's own encoder (the one it chooses for the scrape's `Accept` header) with
made-up values, and kept as the fixed text around the values; a scrape then only formats its values, with the
library's own `floatToGoString`, checking as it goes that each sample is the one the shape was made for (its
name and labels, in order). The library stays the authority on the format, at every version: a family no
kept shape fits is prepared anew, and one whose text does not split around its values (a timestamp, an
exemplar, a sample line the split does not recognise) is written by the encoder itself, every time.
`tests/test_exposition_text.py` holds the result byte for byte to the library's.

Content negotiation and the choice of gzip are the library's too (`choose_encoder`, `gzip_accepted`; the
level is ours); `name[]` filtering is left to the library's WSGI app.
"""

from __future__ import annotations

import gzip
import operator
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter.web.responses import StartResponse, WSGIApp

MAX_SHAPES = 1024
"""Prepared shapes kept (the oldest dropped first): a Room's version label is the one open-ended part."""

GZIP_LEVEL = 1
"""prometheus_client compresses at 9: a Room's ~8 KB answer then costs 126 us against 63 us at 1, for 1552
bytes against 1759. Any level is the same gzip to Prometheus."""

Encoder = Callable[[Collector], bytes]
format_value: Callable[[float], str] = floatToGoString  # the library's own; it leaves it unannotated
FamilyKey = tuple[str, str, str, str, str]
"""What a family's text depends on besides its samples: content type, name, type, help, unit."""
MAX_VARIANTS = 8
"""Shapes kept under one family key: its label sets (a version label) differ between Rooms."""
MAX_CONTENT_TYPES = 16
"""Content types written through prepared shapes; any other is written by the library every time. The
client's `Accept` header chooses it, and prometheus_client 0.21+ copies the `version=` it asks for into it:
without a bound, each new header would be kept for good and push the real shapes out."""

_extras = operator.attrgetter(*(name for name in Sample._fields if name not in ("name", "labels", "value")))
"""A sample's timestamp, then its exemplar (and native histogram, in releases that have one)."""
_NO_EXTRAS = _extras(Sample("x", {}, 0))
_SMALL_INTS = {number: format_value(number) for number in range(1024)}


class _Families(Collector):
    """A fixed list of families, to hand to an encoder."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class _Shape:
    """One family's text with its values left out: the header lines, then for each sample its name, its labels
    and the text before its value."""

    __slots__ = ("header", "series")

    def __init__(self, header: str, series: list[tuple[str, dict[str, str], str]]) -> None:
        self.header, self.series = header, series

    def text(self, family: Metric) -> str | None:
        """The family's text, or None unless its samples are exactly this shape's (checked as it is written:
        the same names and labels, in order, and no timestamp or exemplar)."""
        samples = family.samples
        if len(samples) != len(self.series):
            return None
        lines = [self.header]
        for (name, labels, prefix), sample in zip(self.series, samples, strict=True):
            if sample.name != name or sample.labels != labels or _extras(sample) != _NO_EXTRAS:
                return None
            value = sample.value
            written = _SMALL_INTS.get(value) if type(value) is int else None  # counts, 0/1 states
            lines.append(f"{prefix}{written or format_value(value)}\n")
        return "".join(lines)


class PreparedText:
    """Thread-safe: any number of scrapes write through it at once."""

    def __init__(self, max_shapes: int = MAX_SHAPES) -> None:
        self.max_shapes = max_shapes
        self._shapes: dict[FamilyKey, list[_Shape]] = {}
        self._trailers: dict[str, str] = {}
        self._lock = threading.Lock()

    def encode(self, families: Iterable[Metric], encoder: Encoder, content_type: str) -> bytes:
        """What `encoder(registry)` returns for a registry collecting `families`, byte for byte."""
        trailer = self._trailer(encoder, content_type)
        if trailer is None:
            return encoder(_Families(list(families)))
        parts = []
        for family in families:
            key = (content_type, family.name, family.type, family.documentation, family.unit)
            text = None
            for shape in self._shapes.get(key, ()):  # a dict read is atomic: no lock on the common path
                text = shape.text(family)
                if text is not None:
                    break
            parts.append(self._prepared(key, family, encoder, trailer) if text is None else text)
        parts.append(trailer)
        return "".join(parts).encode()

    def __len__(self) -> int:
        """Shapes kept, every variant counted."""
        with self._lock:
            return sum(len(variants) for variants in self._shapes.values())

    def _trailer(self, encoder: Encoder, content_type: str) -> str | None:
        """What the encoder writes after every family (OpenMetrics' `# EOF`), from an empty registry; None
        for a content type past the first MAX_CONTENT_TYPES."""
        trailer = self._trailers.get(content_type)
        if trailer is None:
            trailer = encoder(_Families([])).decode()
            with self._lock:
                if content_type not in self._trailers and len(self._trailers) >= MAX_CONTENT_TYPES:
                    return None
                self._trailers[content_type] = trailer
        return trailer

    def _prepared(self, key: FamilyKey, family: Metric, encoder: Encoder, trailer: str) -> str:
        """A family no kept shape fits: its shape prepared and kept, and its text; written by the encoder
        itself when its text does not split around its values."""
        shape = _prepare(family, encoder, trailer)
        text = None if shape is None else shape.text(family)
        if shape is None or text is None:
            return _encoded(encoder, [family], trailer)
        with self._lock:
            variants = [shape, *self._shapes.pop(key, ())][:MAX_VARIANTS]  # newest first
            self._shapes[key] = variants  # re-inserted: the dict's order is the keys' age
            kept = sum(len(each) for each in self._shapes.values())
            while kept > self.max_shapes:  # the oldest keys first
                kept -= len(self._shapes.pop(next(iter(self._shapes))))
        return text


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
    series = []
    for number, (line, sample) in enumerate(zip(samples, family.samples, strict=True), start=1):
        value = f" {format_value(number)}\n"
        if not line.endswith(value):
            return None
        series.append((sample.name, dict(sample.labels), line[: -len(value)] + " "))
    return _Shape("".join(lines[:header_lines]), series)


prepared_text = PreparedText()
"""The process's prepared shapes, shared by every scrape."""


def metrics_answer(
    registry: CollectorRegistry, environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    """`registry` answered as prometheus_client's WSGI app answers it (format by `Accept`, gzip by
    `Accept-Encoding`, `name[]` filters), through the prepared shapes."""
    query = environ.get("QUERY_STRING", "")
    if "name" in query and "name[]" in parse_qs(query):
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
