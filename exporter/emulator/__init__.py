"""A TrueConf Room stand-in: the WebSocket API, config.json, fixed scenarios, a living demo, fault modes.

Only `server` needs the WebSocket server library (the `[emulator]` extra); `faults`, `scenario` and `living`
import without it, so the command line can describe the emulator on an install that lacks it.
"""
