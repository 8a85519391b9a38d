"""The package's layout is its architecture: data flows cli -> web -> collect -> room, and no module imports
one that imports it back. These tests read the imports from the source, so a shortcut fails here first.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"

ALLOWED: dict[str, set[str]] = {
    "__main__": {"cli"},
    "cli": {
        "<root>",
        "allocator",
        "build",
        "logs",
        "web",
        "fleet",
        "collect",
        "room",
        "files",
        "emulator",
        "methods",
        "text",
        "lru",
    },
    "web": {"<root>", "allocator", "build", "fleet", "collect", "methods", "room", "files", "text", "lru"},
    "fleet": {"methods", "room", "files", "text", "lru"},
    "collect": {"<root>", "build", "methods", "room", "text", "lru"},
    "room": {"methods", "text", "lru"},
    "files": {"text", "lru"},
    "logs": {"text", "lru"},
    "build": {"<root>"},
    "emulator": {"methods"},
    "methods": set(),
    "text": set(),
    "lru": set(),
    "allocator": set(),
    "<root>": set(),
}
"""Which top-level parts of `exporter` each part may import. The emulator stands alone: it plays the Room,
so it shares no code with the client that talks to it, only the Room API's method names (`methods`, which
imports nothing). `text` (text made safe to show) and `lru` (the bounded mapping) are floors too: they import
nothing, and every part but the emulator may use them."""


def module_name(path: Path) -> str:
    parts = ("exporter", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative / "__init__.py").exists()


def imports(path: Path, module_level_only: bool) -> set[str]:
    """The `exporter` modules a file imports; `from package import submodule` counts as the submodule."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "exporter":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if is_module(submodule) else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "exporter"}
    return found


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def test_every_part_imports_only_the_parts_below_it():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        module = module_name(path)
        for imported in imports(path, module_level_only=False):
            if part(imported) != part(module) and part(imported) not in ALLOWED[part(module)]:
                wrong.append(f"{module} imports {imported}")
    assert wrong == []


def test_there_is_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        graph[module_name(path)] |= imports(path, module_level_only=True)
    cycles: list[str] = []
    finished: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            cycles.append(" -> ".join([*trail[trail.index(module) :], module]))
            return
        if module in finished:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*trail, module])
        finished.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []


def test_no_command_module_passes_250_lines():
    long = {p.name: n for p in (PACKAGE / "cli").glob("*.py") if (n := len(p.read_text().splitlines())) > 250}
    assert long == {}


def test_the_code_map_names_every_module():
    """docs/development.md's code map is how a newcomer finds their way: it must not fall behind the code."""
    text = (PACKAGE.parent / "docs" / "development.md").read_text()
    code_map = text[text.index("## Code map") :]
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        folder = f"  {relative.parent}/" if relative.parent != Path() else ""
        if (folder and folder not in code_map) or f" {relative.name} " not in code_map:
            missing.append(str(relative))
    assert missing == []


MUTABLE_CALLS = {
    *("dict", "set", "list", "bytearray", "OrderedDict", "defaultdict", "deque", "Counter", "count"),
    *("Lock", "RLock", "Condition", "Event", "Semaphore", "BoundedSemaphore", "local"),
    *("WeakSet", "WeakKeyDictionary", "WeakValueDictionary", "Resolver"),
}
"""Calls whose result is state: at module level, under any name, they make a process global."""

ALLOWED_CALLS = {
    "getLogger": "a logger is the logging module's, configured once by the command: no state of ours",
    "partial": "a function with some arguments given: it holds what it was given, and changes nothing",
    "version": "the installed package's version string",
}
"""The only calls a lower-case module-level name may be bound to: each named with why it holds no state."""

READ_ONLY = {"MappingProxyType", "frozenset", "tuple"}
"""Calls that make a read-only copy of the dict, set or list written out as their argument."""

READ_ONLY_TYPES = {"Mapping", "AbstractSet", "Sequence"}
"""What `Final[...]` may type a table written out as a dict, set or list: mypy refuses a write to it."""

DISPLAYS = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)

MUTATORS = {"append", "extend", "insert", "add", "update", "pop", "popitem", "clear", "setdefault"}
MUTATORS |= {"remove", "discard", "sort", "reverse", "__setitem__", "__delitem__"}

SECRET_PARAMETER = re.compile(r"pin|password|passwd|secret|token|credential", re.IGNORECASE)


def called_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def module_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """A module's own statements, with those in its top-level if/try/with; never a def's or a class's."""
    for statement in body:
        yield statement
        if isinstance(statement, ast.If | ast.With):
            yield from module_statements([*statement.body, *getattr(statement, "orelse", [])])
        elif isinstance(statement, ast.Try):
            blocks = [*statement.body, *statement.orelse, *statement.finalbody]
            yield from module_statements(blocks + [s for h in statement.handlers for s in h.body])


def is_constant_name(name: str) -> bool:
    return name.lstrip("_").isupper()


def typed_read_only(annotation: ast.expr | None) -> bool:
    """True for `Final[Mapping[...]]` (or AbstractSet, Sequence): a type under which mypy refuses a write."""
    if not (isinstance(annotation, ast.Subscript) and called_name(annotation.value) == "Final"):
        return False
    inner = annotation.slice
    return isinstance(inner, ast.Subscript) and called_name(inner.value) in READ_ONLY_TYPES


def writable_parts(value: ast.expr, typed: bool) -> Iterator[ast.expr]:
    """The dicts, lists and sets in a value that stay writable: every display or MUTABLE_CALLS call but
    those that are a READ_ONLY call's argument, the whole value when `typed` read-only, and the lists of
    a type (`Callable[[int], None]`)."""
    nodes = list(ast.walk(value))
    wrapped = {
        id(n.args[0])
        for n in nodes
        if isinstance(n, ast.Call) and n.args and called_name(n.func) in READ_ONLY
    }
    wrapped |= {id(inner) for n in nodes if isinstance(n, ast.Subscript) for inner in ast.walk(n.slice)}
    if typed:
        wrapped.add(id(value))
    for node in nodes:
        constructed = isinstance(node, ast.Call) and called_name(node.func) in MUTABLE_CALLS
        if (isinstance(node, DISPLAYS) or constructed) and id(node) not in wrapped:
            yield node


def module_globals_with_state(trees: dict[str, ast.Module]) -> list[str]:
    """Module-level names that hold state (see the test below), as `module:line name: why`."""
    found: list[str] = []
    tables: dict[str, str] = {}
    for module, tree in trees.items():
        for statement in module_statements(tree.body):
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                cached = any(
                    called_name(d.func if isinstance(d, ast.Call) else d) in {"cache", "lru_cache"}
                    for d in statement.decorator_list
                )
                secrets = [a.arg for a in statement.args.args if SECRET_PARAMETER.search(a.arg)]
                if cached and secrets:
                    found.append(f"{module}:{statement.lineno} {statement.name}: a cache keyed by {secrets}")
            if not isinstance(statement, ast.Assign | ast.AnnAssign) or statement.value is None:
                continue
            value = statement.value
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for name in (t.id for t in targets if isinstance(t, ast.Name) and not t.id.startswith("__")):
                where = f"{module}:{statement.lineno} {name}"
                callee = called_name(value.func) if isinstance(value, ast.Call) else None
                annotation = statement.annotation if isinstance(statement, ast.AnnAssign) else None
                typed = is_constant_name(name) and typed_read_only(annotation)
                writable = next(writable_parts(value, typed), None)
                if callee in MUTABLE_CALLS:
                    found.append(f"{where}: {callee}() at module level")
                elif callee is not None and name.lstrip("_")[:1].islower() and callee not in ALLOWED_CALLS:
                    found.append(f"{where}: the result of {callee}() at module level")
                elif writable is not None:
                    found.append(f"{where}: a writable {ast.unparse(writable)[:40]} at module level")
                elif is_constant_name(name) and any(isinstance(n, DISPLAYS) for n in ast.walk(value)):
                    tables[name] = where
    for module, tree in trees.items():  # a constant table is one that nothing writes to
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                found.append(f"{module}:{node.lineno} global {', '.join(node.names)}: rebinds module state")
            written: ast.expr | None = None
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in MUTATORS
            ):
                written = node.func.value
            elif isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
                items = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
                written = next((t.value for t in items if isinstance(t, ast.Subscript)), None)
            if written is not None and called_name(written) in tables:
                found.append(f"{tables[called_name(written)]}: a table written to at {module}:{node.lineno}")
    return found


def package_trees() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_keeps_state_in_a_global():
    """State belongs to the objects that own it (the app, its session pool, its config holder), which tests
    build for themselves; a module-level global is shared by every app and test in the process. At module
    level in exporter/: no call of a constructor of state (dict(), set(), Lock(), count(), Resolver()...)
    under any name; a lower-case name bound only to an ALLOWED_CALLS call; a dict, list or set written
    out only as an ALL_CAPS table that cannot be written to (inside a READ_ONLY call, or typed
    `Final[Mapping[...]]` so that mypy refuses a write) and that nothing writes to; no `global`; no
    functools cache of a secret."""
    assert module_globals_with_state(package_trees()) == []


def test_the_global_check_finds_each_kind_of_state():
    source = """
resolver = Resolver()
_warned: set[str] = set()
seen = {}
_COUNTER = itertools.count(1)
TABLE = {"a": 1}
FROZEN = MappingProxyType({"b": 2})
TYPED: Final[Mapping[str, int]] = {"c": 3}
ROWS = (MappingProxyType({"d": [1]}), frozenset({"e"}), tuple([2]))
MADE = (dict(f=4),)
LOOSE: Mapping[str, int] = {"g": 5}
Job = Callable[[], None]
log = logging.getLogger(__name__)
_reaper = Reaper()
PreparedText = TypeVar("PreparedText")

@functools.lru_cache(maxsize=8)
def digest(pin): ...

def remember(key):
    TYPED[key] = 1
"""
    found = module_globals_with_state({"exporter.sample": ast.parse(source)})
    assert [entry.split(":", 1)[1].split(":")[0] for entry in found] == [
        "2 resolver",
        "3 _warned",
        "4 seen",
        "5 _COUNTER",
        "6 TABLE",
        "9 ROWS",
        "10 MADE",
        "11 LOOSE",
        "14 _reaper",
        "18 digest",
        "8 TYPED",
    ]
