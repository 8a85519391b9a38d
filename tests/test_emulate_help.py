"""`emulate --help` names every scenario `--scenario` takes by name (it once left `every-method` out)."""

from __future__ import annotations

from exporter.cli.emulator import emulate
from exporter.emulator.scenario import BUILTIN_SCENARIOS, DEMO


def test_the_scenario_help_names_every_builtin_scenario() -> None:
    [scenario] = [p for p in emulate.params if p.name == "scenario"]
    help_text = getattr(scenario, "help", "") or ""
    for name in (DEMO, *BUILTIN_SCENARIOS):
        assert f"'{name}'" in help_text, name
