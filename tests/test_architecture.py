"""The package's layout is its architecture: data flows cli -> web -> collect -> room, and no module imports
one that imports it back. These tests read the imports from the source, so a shortcut fails here first.
"""

from __future__ import annotations

import ast
from collections import defaultdict
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
        "text",
    },
    "web": {"<root>", "allocator", "build", "fleet", "collect", "room", "files", "text"},
    "fleet": {"room", "files", "text"},
    "collect": {"<root>", "build", "room", "text"},
    "room": {"text"},
    "files": {"text"},
    "logs": {"text"},
    "build": {"<root>"},
    "emulator": set(),
    "text": set(),
    "allocator": set(),
    "<root>": set(),
}
"""Which top-level parts of `exporter` each part may import. The emulator stands alone: it plays the Room,
so it shares no code with the client that talks to it. `text` (text made safe to show) is the floor: it
imports nothing, and every part but the emulator may use it."""


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
