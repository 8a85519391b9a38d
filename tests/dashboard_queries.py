"""The dashboard and alert files as data: their PromQL queries, their selectors, Grafana's substitutions.

Shared by the dashboard lint (tests/test_dashboard.py), the rule checks (tests/test_alert_rules.py) and the
end-to-end test against a real Prometheus (tests/test_prometheus_e2e.py). The PromQL scanner is small on
purpose: it knows strings, label matchers, ranges, numbers, Grafana variables and identifiers, which is all
the project's queries use, and tests/test_dashboard.py pins its behaviour.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.exposition import names
from tests.processes import Process, http_get

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboards" / "trueconf-file-transfers.json"
ALERTS = ROOT / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
PROMTOOL_TESTS = ROOT / "prometheus" / "tests"
ROOM_SCENARIO = ROOT / "tests" / "fixtures" / "dashboard-room.json"
"""A Room listing every status and destination, a malformed entry and requests older than the thresholds."""

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
JOB_MATCHER = 'job=~"$job"'
SITE_MATCHER = 'site=~"$site"'
INSTANCE_MATCHER = 'instance=~"$instance"'
ROOM_MATCHERS = (JOB_MATCHER, SITE_MATCHER, INSTANCE_MATCHER)
"""Every selector of every panel carries these three, so every panel follows the job, site and Room picked."""
LINK_VARIABLES = ("exporter", "module")
"""The textbox variables the Room links are built from: the exporter URL, the module."""

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
   |(?P<matchers>\{(?:[^}"']|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')*\})
   |(?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
   |(?P<range>\[[^\]]*\])
   |(?P<number>\d[\w.]*|\.\d[\w.]*)
   |(?P<ident>[a-zA-Z_:][\w:]*)
   |(?P<space>\s+)
   |(?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)

LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
"""Keywords followed by a parenthesised list of label names, not of expressions."""
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"})

GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
"""Values for Grafana's built-in variables: what a 1h dashboard range over a 15s-scrape Prometheus gives."""


@dataclass(frozen=True)
class Selector:
    """One vector selector: its metric name (None for `{__name__=...}`), its `{...}` text (None if bare)."""

    metric: str | None
    matchers: str | None

    def has_matcher(self, matcher: str) -> bool:
        return self.matchers is not None and matcher in _matcher_list(self.matchers)


def _matcher_list(matchers: str) -> list[str]:
    """`{a="1", b=~"x"}` -> ['a="1"', 'b=~"x"'] with the spaces around operators removed."""
    inner = matchers.strip()[1:-1]
    parts = re.findall(
        r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')\s*,?', inner
    )
    return [f"{name}{op}{value}" for name, op, value in parts]


def matcher_list(matchers: str | None) -> list[str]:
    return [] if matchers is None else _matcher_list(matchers)


def _tokens(expr: str) -> list[tuple[str, str]]:
    return [(m.lastgroup or "", m.group()) for m in _TOKEN.finditer(expr) if m.lastgroup != "space"]


def selectors(expr: str) -> list[Selector]:
    """Every vector selector in a PromQL expression, in order."""
    tokens = _tokens(expr)
    found: list[Selector] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "ident":
            if text in LABEL_LIST_KEYWORDS and following[1] == "(":
                i = _after_closing_paren(tokens, i + 1)
                continue
            if following[1] == "(" or text in KEYWORDS or following[1] in ("by", "without"):
                i += 1
                continue
            if following[0] == "matchers":
                found.append(Selector(text, following[1]))
                i += 2
                continue
            found.append(Selector(text, None))
        elif kind == "matchers":
            found.append(Selector(None, text))
        i += 1
    return found


def _after_closing_paren(tokens: list[tuple[str, str]], open_index: int) -> int:
    depth = 0
    for j in range(open_index, len(tokens)):
        if tokens[j][1] == "(":
            depth += 1
        elif tokens[j][1] == ")":
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError("unbalanced parentheses")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads; a `{__name__=~"..."}` selector is `<__name__>`."""
    return {s.metric or "<__name__>" for s in selectors(expr)}


LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<expr>.*?)\s*,\s*)?(?P<label>[a-zA-Z_]\w*)\s*\)\s*$", re.DOTALL
)


@dataclass(frozen=True)
class VariableQuery:
    """A Grafana `label_values(expr, label)` variable query."""

    name: str
    expr: str | None
    label: str

    def as_promql(self) -> str:
        """The instant query whose series carry every value of the variable, one per series."""
        expr = self.expr or "{" + self.label + '!=""}'
        return f"group by ({self.label}) ({expr})"


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def load_alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows excluded), also those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def rows(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard.get("panels", []) if panel.get("type") == "row"]


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard.get("templating", {}).get("list", [])}


def variable_query(variable: dict[str, Any]) -> VariableQuery:
    query = variable.get("query")
    text = query.get("query", "") if isinstance(query, dict) else str(query or "")
    match = LABEL_VALUES.match(text)
    if not match:
        raise ValueError(f"variable {variable['name']!r}: not a label_values() query: {text!r}")
    return VariableQuery(variable["name"], match.group("expr"), match.group("label"))


def regex_value(values: list[str]) -> str:
    """What Grafana puts in place of a multi-value variable inside a PromQL regex string: each value
    regex-escaped (its backslashes doubled for the PromQL string), several joined as `(a|b)`."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


WORST_FIRST = re.compile(r"\b(?:topk|bottomk)\(\s*(\d+)\s*,")


def worst_first_limit(expr: str) -> int | None:
    """The N of a `topk(N, ...)` / `bottomk(N, ...)` query (the largest if several), None without one."""
    found = [int(n) for n in WORST_FIRST.findall(expr)]
    return max(found) if found else None


def data_links(panel: dict[str, Any]) -> list[dict[str, Any]]:
    """The data links of a panel's fields (defaults and overrides)."""
    field_config = panel.get("fieldConfig", {})
    found = list(field_config.get("defaults", {}).get("links", []))
    for override in field_config.get("overrides", []):
        for prop in override.get("properties", []):
            if prop.get("id") == "links":
                found += prop.get("value") or []
    return found


def link_url(template: str, variables: dict[str, str], room: str) -> str:
    """A data link's URL as Grafana builds it for `room`: `${name:raw}` as is, `${name:percentencode}` and
    the Room (`${__data.fields.instance...}` in a table row, `${__field.labels.instance...}` on a series)
    percent-encoded; any other variable or format is an error."""

    def replace(match: re.Match[str]) -> str:
        name, fmt = match.group("name"), match.group("format")
        if name in ("__data.fields.instance", "__field.labels.instance"):
            value = room
        elif name in variables:
            value = variables[name]
        else:
            raise KeyError(f"no value for ${{{name}}} in {template!r}")
        if fmt == "raw":
            return value
        if fmt == "percentencode":
            return urllib.parse.quote(value, safe="")
        raise ValueError(f"${{{name}}} without :raw or :percentencode in {template!r}")

    url = re.sub(r"\$\{(?P<name>[\w.]+)(?::(?P<format>\w+))?\}", replace, template)
    if "$" in url:
        raise ValueError(f"an unsupported variable form in {template!r}")
    return url


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace `$name`, `${name}`, `${name:format}` and `[[name]]` by `values` or Grafana's built-ins."""
    known = {**GRAFANA_BUILTINS, **values}

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain") or match.group("old")
        if name not in known:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return known[name]

    return re.sub(
        r"\$\{(?P<braced>\w+)(?::\w+)?\}|\$(?P<plain>[a-zA-Z_]\w*)|\[\[(?P<old>\w+)\]\]", replace, expr
    )


def exposed_metric_names(processes: dict[str, Callable[..., Process]], workdir: Path) -> set[str]:
    """Every sample name real exporters expose when scraped, reading the Room of ROOM_SCENARIO: a
    single-target exporter's /metrics, a multi-target exporter's /metrics and /probe."""
    room = processes["emulator"]("--scenario", str(ROOM_SCENARIO))
    target = f"ws://127.0.0.1:{room.ports['websocket']}"
    single = processes["exporter"]("--target", target)
    config_file = workdir / "exporter-config.yml"
    config_file.write_text(yaml.safe_dump({"modules": {"default": {}}, "allowed_targets": ["127.0.0.1"]}))
    multi = processes["exporter"]("--config.file", str(config_file))
    exposed: set[str] = set()
    for url in (
        f"http://127.0.0.1:{single.ports['http']}/metrics",
        f"http://127.0.0.1:{multi.ports['http']}/metrics",
        f"http://127.0.0.1:{multi.ports['http']}/probe?" + urllib.parse.urlencode({"target": target}),
    ):
        status, _, body = http_get(url)
        assert status == 200, (url, body)
        exposed |= names(body.decode())
    assert "trueconf_up" in exposed, exposed
    assert "trueconf_outgoing_file_requests_oldest_pending_timestamp_seconds" in exposed, exposed
    return exposed
