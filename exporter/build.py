"""What build of the exporter is running: version, source revision and Python, as Go exporters report them.

The version is the package's (pyproject.toml, the one place it is written). The revision is, in order: the
`REVISION` file the container build writes into the package, the commit of the git checkout the package is
imported from, or `unknown`.
"""

from __future__ import annotations

import functools
import platform
from importlib import resources
from pathlib import Path

from exporter import __version__

UNKNOWN = "unknown"


@functools.cache
def revision() -> str:
    """The source revision, read once: a baked-in REVISION file, else the checkout's HEAD, else unknown."""
    baked = resources.files("exporter") / "REVISION"
    if baked.is_file():
        text = baked.read_text(encoding="utf-8").strip()
        if text:
            return text
    return _checkout_head(Path(__file__).resolve().parent.parent / ".git") or UNKNOWN


def _checkout_head(git: Path) -> str | None:
    """The commit HEAD names in a git checkout, read from its files (no git command needed). A worktree's
    `.git` is a file naming its own git directory (HEAD), whose `commondir` holds the refs."""
    try:
        if git.is_file():
            git = (git.parent / git.read_text(encoding="utf-8").removeprefix("gitdir:").strip()).resolve()
        head = (git / "HEAD").read_text(encoding="ascii").strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head.removeprefix("ref: ")
        common = (
            git / (git / "commondir").read_text(encoding="ascii").strip()
            if (git / "commondir").is_file()
            else git
        )
        loose = common / ref
        if loose.is_file():
            return loose.read_text(encoding="ascii").strip() or None
        for line in (common / "packed-refs").read_text(encoding="ascii").splitlines():
            commit, _, name = line.partition(" ")
            if name == ref:
                return commit
    except (OSError, UnicodeDecodeError):
        return None
    return None


def build_labels() -> dict[str, str]:
    """The labels of `trueconf_exporter_build_info`."""
    return {"version": __version__, "revision": revision(), "python_version": platform.python_version()}


def server_name() -> str:
    """The HTTP `Server` header: the exporter and its version, nothing about the runtime underneath."""
    return f"trueconf-exporter/{__version__}"
