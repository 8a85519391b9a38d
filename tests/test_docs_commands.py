"""The docs cannot drift from the command line: every `trueconf-exporter ...` command shown in README.md and
docs/*.md (code blocks and inline code) names a real subcommand, real flags and values they accept; every
flag mentioned alone exists; configuration.md's flag tables give each option's real variable and default and
miss none; the documented exit codes are the ones `check` gives.

Flags and values are checked against click's own command objects (the same ones that parse a real command
line), converting each value with the option's type: nothing is executed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from exporter.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENV_FILE = ROOT / "contrib" / "systemd" / "trueconf-exporter.env"
PROGRAM = "trueconf-exporter"
PLACEHOLDER = re.compile(r"^(\.\.\.|[A-Z][A-Z0-9_-]*)$")
"""A value a reader replaces (ROOM-HOST, MODE, FILE, ...): its flag must exist, the value is not converted."""
FOREIGN_FLAGS = {
    "--network",  # podman/docker run
    "--health-cmd",  # docker run
    "--no-healthcheck",  # docker run
    "--as",  # prlimit
    "--nproc",  # prlimit
    "--strict-markers",  # pytest
    "--profile",  # benchmarks/bench_sessions.py
    "--only",  # benchmarks/bench_sessions.py
    "--max-fd-growth",  # scripts/soak.py
    "--max-thread-growth",  # scripts/soak.py
    "--max-rss-growth-mib",  # scripts/soak.py
}
"""Flags of other programs that the docs mention in inline code on their own, without the program's name."""
OTHER_PROGRAMS = re.compile(
    r"^(\S*/)?(docker|podman|prlimit|ruff|pytest|python3?|curl|kubectl|promtool|amtool|systemctl|pip|install|make|sed)$"
)


@dataclass(frozen=True)
class Shown:
    """A piece of a doc that shows a command or a flag: where it is and its text."""

    where: str
    text: str


def pieces(path: Path) -> Iterator[Shown]:
    """The lines of fenced code blocks (continuation lines joined) and the inline code spans of the prose
    (a span may run over a line break, as Markdown allows within a paragraph)."""
    fenced = False
    pending = ""
    paragraph: list[str] = []
    start = 0
    for number, line in enumerate([*path.read_text().splitlines(), ""], start=1):
        where = f"{path.relative_to(ROOT)}:{number}"
        if fenced or line.lstrip().startswith("```") or not line.strip():
            yield from _spans(f"{path.relative_to(ROOT)}:{start}", " ".join(paragraph))
            paragraph = []
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield Shown(where, pending + line)
            pending = ""
        elif line.strip():
            start = start if paragraph else number
            paragraph.append(line)


def _spans(where: str, prose: str) -> Iterator[Shown]:
    prose = re.sub(r"\]\([^)]*\)", "]", prose)  # link targets such as (#the-config-file---configfile)
    for span in re.findall(r"`([^`]+)`", prose):
        yield Shown(where, span)


def commands(shown: Shown) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Each `trueconf-exporter ...` command in a piece of text: its VAR=value assignments and arguments."""
    text = re.sub(r"^\s*\$ ", "", shown.text)
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:
        return
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if token in ("&&", "||", ";", "|", "&") or token.endswith(";"):
            yield from _command(segment)
            segment = []
        else:
            segment.append(token)


def _command(tokens: list[str]) -> Iterator[tuple[dict[str, str], list[str]]]:
    assignments: dict[str, str] = {}
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
        name, _, value = tokens.pop(0).partition("=")
        assignments[name] = value
    if tokens and tokens[0].rsplit("/", 1)[-1] == PROGRAM:
        yield assignments, tokens[1:]


def options_of(command: click.Command) -> dict[str, click.Parameter]:
    """Every flag spelling of a command (`--x` and `--no-x` alike), with --help."""
    found: dict[str, click.Parameter] = {}
    for param in command.get_params(click.Context(command)):
        for name in [*param.opts, *getattr(param, "secondary_opts", [])]:
            found[name] = param
    return found


def subcommands() -> dict[str, click.Command]:
    assert isinstance(main, click.Group)
    return dict(main.commands)


def all_flags() -> set[str]:
    flags = set(options_of(main))
    for command in subcommands().values():
        flags |= set(options_of(command))
    return flags


def check_value(command: click.Command, param: click.Parameter, value: str) -> str | None:
    """None when click's type for `param` takes `value` (a placeholder is taken as it is), else why not."""
    if PLACEHOLDER.match(value):
        return None
    try:
        param.type.convert(value, param, click.Context(command))
    except click.BadParameter as error:
        return error.format_message()
    return None


def problems_of(assignments: dict[str, str], args: list[str]) -> list[str]:
    """What is wrong with one documented command line, in words; [] when click would take it."""
    commands_ = subcommands()
    command: click.Command = main
    if args and not args[0].startswith("-"):
        name = args.pop(0)
        if PLACEHOLDER.match(name):
            return []  # `trueconf-exporter COMMAND --help`
        if name not in commands_:
            return [f"no subcommand {name!r}"]
        command = commands_[name]
    options = options_of(command)
    variables = {param.envvar: param for param in options.values() if isinstance(param, click.Option)}
    found = []
    for variable, value in assignments.items():
        if variable.startswith("TRUECONF_EXPORTER_"):
            if variable not in variables:
                found.append(f"{variable} is no variable of {command.name}")
            elif why := check_value(command, variables[variable], value):
                found.append(f"{variable}={value}: {why}")
    while args:
        token = args.pop(0)
        flag, has_value, value = token.partition("=")
        if not flag.startswith("-"):
            found.append(f"{command.name} takes no argument {token!r}")
            continue
        param = options.get(flag)
        if param is None:
            found.append(f"{flag} is no flag of {command.name}")
            continue
        if isinstance(param, click.Option) and (param.is_flag or param.is_bool_flag):
            continue
        if not has_value:
            if not args:
                found.append(f"{flag} needs a value")
                continue
            value = args.pop(0)
        if why := check_value(command, param, value):
            found.append(f"{flag} {value}: {why}")
    return found


def documented_commands() -> list[tuple[Shown, dict[str, str], list[str]]]:
    return [(shown, env, args) for path in DOCS for shown in pieces(path) for env, args in commands(shown)]


def test_the_docs_show_commands_to_check():
    """The extraction itself: a change in how the docs write commands must not make this test vacuous."""
    shown = documented_commands()
    assert len(shown) >= 15
    assert {args[0] for _, _, args in shown if args} >= {"serve", "check", "emulate", "--version"}
    assert any(env for _, env, _ in shown)


def test_every_documented_command_parses():
    wrong = [
        f"{shown.where}: `{shown.text.strip()}`: {problem}"
        for shown, env, args in documented_commands()
        for problem in problems_of(env, list(args))
    ]
    assert wrong == []


def test_every_flag_mentioned_alone_exists():
    """`--room.sessions` in a sentence, or a table's first cell, is a promise that the flag exists."""
    flags = all_flags()
    wrong = []
    for path in DOCS:
        for shown in pieces(path):
            tokens = shown.text.split()
            if not tokens or not tokens[0].startswith("--"):
                continue  # a command of ours is checked whole above; another program's flags are its own
            for written in re.findall(r"(?<![\w-])--[a-z][\w.*-]*", shown.text):
                flag = written.rstrip(".")
                if flag in FOREIGN_FLAGS or flag in flags:
                    continue
                if flag.endswith("*") and any(f.startswith(flag[:-1]) for f in flags):
                    continue  # `--collector.*`
                wrong.append(f"{shown.where}: {flag}")
    assert wrong == []


def test_the_environment_file_names_real_variables_with_values_they_take():
    wrong = []
    for number, line in enumerate(ENV_FILE.read_text().splitlines(), start=1):
        if match := re.match(r"^#?(TRUECONF_EXPORTER_[A-Z0-9_]+)=(.*)$", line):
            wrong += [f"line {number}: {p}" for p in problems_of({match[1]: match[2]}, ["serve"])]
    assert wrong == []


# ---- configuration.md's flag tables ----

SECTIONS = {"serve and check": ("serve", "check"), "serve only": ("serve",), "emulate": ("emulate",)}
SECTIONS |= {"demo": ("demo",)}


def flag_tables() -> dict[str, list[tuple[str, list[str]]]]:
    """configuration.md's flag table rows by section: (where, cells)."""
    tables: dict[str, list[tuple[str, list[str]]]] = {}
    section = ""
    path = ROOT / "docs" / "configuration.md"
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("## "):
            section = line[3:].strip()
        elif section in SECTIONS and line.startswith("| `--"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            tables.setdefault(section, []).append((f"docs/configuration.md:{number}", cells))
    return tables


def row_params(command: click.Command, cell: str) -> list[click.Option]:
    """The options a row's first cell names, once each (`--x` / `--no-x` is one option)."""
    options = options_of(command)
    params: list[click.Option] = []
    for flag in re.findall(r"`(--[^`]+)`", cell):
        param = options.get(flag)
        if isinstance(param, click.Option) and param not in params:
            params.append(param)
    return params


def documented_default(text: str) -> str:
    """A table's default as click would be given it: `on`/`off` is a switch."""
    text = re.sub(r"\s*\(.*\)$", "", text).strip().strip("`")
    return {"on": "true", "off": "false"}.get(text, text)


def same_default(command: click.Command, param: click.Option, documented: str) -> bool:
    """`none` is no default, unless `none` is the option's value (`--fault none`)."""
    if param.default is None:
        return documented == "none"
    context = click.Context(command)
    return param.type.convert(documented, param, context) == param.type.convert(param.default, param, context)


def test_the_flag_tables_give_the_real_variables_and_defaults():
    commands_ = subcommands()
    serve_variables = {p.name: p.envvar for p in commands_["serve"].params if isinstance(p, click.Option)}
    wrong = []
    for section, rows in flag_tables().items():
        for where, cells in rows:
            flag_cell, variable_cell, default_cell = cells[:3]
            defaults = [documented_default(d) for d in default_cell.split(", ")]
            for name in SECTIONS[section]:
                command = commands_[name]
                params = row_params(command, flag_cell)
                flags = re.findall(r"`(--[^`]+)`", flag_cell)
                unknown = [f for f in flags if f not in options_of(command)]
                if unknown:
                    wrong.append(f"{where}: {name} has no {', '.join(unknown)}")
                    continue
                if len(defaults) != len(params):
                    wrong.append(f"{where}: {len(params)} options, {len(defaults)} defaults")
                    continue
                for param, default in zip(params, defaults, strict=True):
                    if variable_cell == "as for `serve`":
                        variable = serve_variables.get(param.name)
                    else:
                        variable = variable_cell.strip("`")
                    if param.envvar != variable:
                        wrong.append(f"{where}: {name} {param.opts[0]} reads {param.envvar}, not {variable}")
                    if not same_default(command, param, default):
                        wrong.append(
                            f"{where}: {name} {param.opts[0]} defaults to {param.default!r}, not {default}"
                        )
    assert wrong == []


def test_the_flag_tables_miss_no_option():
    documented: dict[str, set[str]] = {}
    commands_ = subcommands()
    for section, rows in flag_tables().items():
        for name in SECTIONS[section]:
            for _, cells in rows:
                documented.setdefault(name, set()).update(
                    p.name for p in row_params(commands_[name], cells[0])
                )
    missing = [
        f"{name} {param.opts[0]}"
        for name, command in commands_.items()
        for param in command.params
        if isinstance(param, click.Option) and param.name not in documented.get(name, set())
    ]
    assert missing == []


# ---- exit codes ----

CHECK_EXIT_CODES = re.compile(
    r"0 when\s+the\s+Room\s+answered,?\s+1\s+when\s+it\s+did\s+not,?\s+and\s+2\s+for\s+a\s+mistake", re.S
)


@pytest.mark.parametrize("path", ["README.md", "docs/configuration.md", "docs/troubleshooting.md"])
def test_the_docs_give_checks_three_exit_codes(path):
    assert CHECK_EXIT_CODES.search((ROOT / path).read_text()), path


def test_check_help_gives_its_three_exit_codes():
    help_text = " ".join(CliRunner().invoke(main, ["check", "--help"]).output.split())
    assert re.search(r"Exit 0 if it answered, 1 if not, 2 for a mistake", help_text), help_text


def test_check_exits_as_documented(room, tmp_path):
    """0 when the Room answered, 1 when it did not, 2 for a mistake in a flag or a file."""
    running = room(scenario="doc-example")
    runner = CliRunner()
    answered = runner.invoke(main, ["check", "--target", f"127.0.0.1:{running.ports.websocket}"])
    closed = runner.invoke(main, ["check", "--target", "127.0.0.1:1", "--timeout", "2s"])
    bad_flag = runner.invoke(main, ["check", "--timeout", "soon"])
    bad_file = runner.invoke(main, ["check", "--pin-file", str(tmp_path / "missing")])
    assert [answered.exit_code, closed.exit_code, bad_flag.exit_code, bad_file.exit_code] == [0, 1, 2, 2]
