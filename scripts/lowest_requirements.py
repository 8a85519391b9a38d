"""Print `name==lowest` for every runtime dependency pyproject.toml declares (and the `emulator` extra).

`make test-min` installs these pins as constraints and runs the tests against them, so each declared lower
bound is one CI proves. A dependency without a `>=` lower bound is an error: that promise cannot be tested.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
RUNTIME_EXTRAS = ("emulator",)
REQUIREMENT = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*)")
LOWER_BOUND = re.compile(r">=\s*(?P<version>[^,\s]+)")


def lowest_pins(pyproject: Path = PYPROJECT) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in RUNTIME_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    pins = []
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        bound = LOWER_BOUND.search(match["spec"]) if match else None
        if match is None or bound is None:
            raise SystemExit(f"{pyproject.name}: {requirement!r} has no '>=' lower bound to test")
        pins.append(f"{match['name']}=={bound['version']}")
    return pins


if __name__ == "__main__":
    sys.stdout.write("".join(f"{pin}\n" for pin in lowest_pins()))
