"""A TrueConf Room stand-in: the WebSocket API, config.json, fixed scenarios, a living demo, fault modes."""

from __future__ import annotations

import time

from exporter.emulator.faults import Fault
from exporter.emulator.living import LivingRoom
from exporter.emulator.scenario import BUILTIN_SCENARIOS, Scenario, ScenarioError, load_scenario
from exporter.emulator.server import EmulatedRoom, EmulatorSettings, Ports, RunningEmulator

DEMO = "demo"


def build_room(scenario: str, settings: EmulatorSettings) -> EmulatedRoom:
    """The Room for a scenario name or file: `demo` lives, anything else is fixed."""
    if scenario == DEMO:
        living = LivingRoom()
        living.start(time.time())
        return EmulatedRoom(settings, living=living)
    return EmulatedRoom(settings, scenario=load_scenario(scenario))


__all__ = [
    "BUILTIN_SCENARIOS",
    "DEMO",
    "EmulatedRoom",
    "EmulatorSettings",
    "Fault",
    "LivingRoom",
    "Ports",
    "RunningEmulator",
    "Scenario",
    "ScenarioError",
    "build_room",
    "load_scenario",
]
