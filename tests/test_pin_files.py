"""PIN files others can read are warned about, as ssh warns of a private key: once per file and mode, naming
the file and its mode, never the PIN. The same reader serves --pin-file, a module's pin_file and *_FILE."""

from __future__ import annotations

import logging
import os

import pytest

from exporter.files.pinfile import PinFiles
from exporter.fleet.config import load_config
from exporter.fleet.reload import ConfigHolder

PIN = "4711"


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "PIN file" in r.getMessage()
    ]


def test_a_file_others_can_read_is_warned_about_once_per_mode(tmp_path, caplog):
    pin_file = tmp_path / "room-pin"
    pin_file.write_text(PIN)
    pin_file.chmod(0o644)
    pin_files = PinFiles()
    with caplog.at_level(logging.WARNING):
        assert pin_files.read(pin_file) == PIN
        assert pin_files.read(pin_file) == PIN  # a reload: the same file, the same mode, no second warning
        pin_file.chmod(0o604)
        pin_files.read(pin_file)
        pin_file.chmod(0o600)
        pin_files.read(pin_file)
    assert warnings(caplog) == [
        f"PIN file {pin_file} is readable by others (mode 0644); chmod 600 it",
        f"PIN file {pin_file} is readable by others (mode 0604); chmod 600 it",
    ]
    assert all(PIN not in record.getMessage() for record in caplog.records)


def test_a_group_other_than_the_exporters_own_is_warned_about(tmp_path, caplog):
    """A group-readable file of the exporter's own group is how a Kubernetes Secret reaches it (fsGroup,
    0440): not warned about. Another group's members may read it: warned about."""
    own, other = tmp_path / "own-group", tmp_path / "other-group"
    for path, group in ((own, os.getgid()), (other, 65534)):
        path.write_text(PIN)
        path.chmod(0o440)
        os.chown(path, -1, group)
    pin_files = PinFiles()
    with caplog.at_level(logging.WARNING):
        pin_files.read(own)
        pin_files.read(other)
    assert warnings(caplog) == [f"PIN file {other} is readable by group 65534 (mode 0440); chmod 600 it"]


def test_a_modules_pin_file_is_warned_about_at_load(tmp_path, caplog):
    (tmp_path / "pins").mkdir()
    pin_file = tmp_path / "pins" / "boardroom"
    pin_file.write_text(PIN)
    pin_file.chmod(0o644)
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  default:\n    pin_file: pins/boardroom\n")
    with caplog.at_level(logging.WARNING):
        load_config(config, 5.0)
    assert warnings(caplog) == [f"PIN file {pin_file} is readable by others (mode 0644); chmod 600 it"]


def test_a_reload_warns_of_no_pin_file_already_warned_of(tmp_path, caplog):
    """The config holder reads PIN files at start and at each reload: a file unchanged is warned of once."""
    pin_file = tmp_path / "boardroom"
    pin_file.write_text(PIN)
    pin_file.chmod(0o644)
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  default:\n    pin_file: boardroom\n")
    with caplog.at_level(logging.WARNING):
        holder = ConfigHolder(config, 5.0)
        assert holder.reload() is None
        assert holder.reload() is None
    assert warnings(caplog) == [f"PIN file {pin_file} is readable by others (mode 0644); chmod 600 it"]
