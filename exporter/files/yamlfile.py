"""Reading the exporter's YAML files (--config.file, --web.config.file) with one-line errors that never quote
the file: a line of either file may hold a secret (a PIN, a password hash)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """A YAML file cannot be used. `str()` is one line: `FILE: KEY: PROBLEM` (or `FILE: PROBLEM`)."""

    def __init__(self, path: Path | str, key: str | None, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")


def read_yaml(path: Path, error: type[YamlFileError]) -> Any:
    """The parsed document, or `error` (a YamlFileError subclass) saying why the file cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(path, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as problem:
        reason = getattr(problem, "strerror", None) or problem
        raise error(path, None, f"cannot read the file ({reason})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as problem:
        raise error(path, None, f"not valid YAML: {_where(problem)}") from None
    except yaml.YAMLError:
        raise error(path, None, "not valid YAML") from None


def reject_unknown_keys(
    path: Path | str, prefix: str, mapping: dict[Any, Any], known: tuple[str, ...], error: type[YamlFileError]
) -> None:
    """Raise `error` naming the first key of `mapping` that is not in `known`: a typo is never ignored."""
    for key in mapping:
        if key not in known:
            raise error(path, f"{prefix}{key}", f"unknown key; expected one of {', '.join(known)}")


def file_named_in(config_path: Path | str, value: str) -> Path:
    """A file named in a YAML file: `~` expanded, and a relative name taken beside that YAML file, so the
    file works from any working directory."""
    named = Path(value).expanduser()
    return named if named.is_absolute() else Path(config_path).parent / named


def _where(error: yaml.MarkedYAMLError) -> str:
    """What and where, without the snippet of the file that PyYAML quotes: that line may hold a secret."""
    parts = []
    for text, mark in ((error.context, error.context_mark), (error.problem, error.problem_mark)):
        if text:
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            parts.append(f"{text}{where}")
    return ": ".join(parts) or "unreadable"
