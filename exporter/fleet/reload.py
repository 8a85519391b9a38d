"""The live config: loaded at start-up, reloaded on SIGHUP or `POST /-/reload`, kept when a reload fails.

Two gauges on `/metrics` say whether the last reload worked, so a broken edit can be alerted on (the same
pair Prometheus and Alertmanager export):

    trueconf_exporter_config_last_reload_successful 1
    trueconf_exporter_config_last_reload_success_timestamp_seconds 1.7e+09
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.files.pinfile import PinFiles
from exporter.fleet.config import ConfigError, ExporterConfig, load_config

log = logging.getLogger(__name__)


class ConfigHolder:
    """Owns the current ExporterConfig; readers get a consistent snapshot, reloads are serialised."""

    def __init__(self, path: Path | str, default_timeout: float) -> None:
        self.path = Path(path)
        self.default_timeout = default_timeout
        self._lock = threading.Lock()
        self.pin_files = PinFiles()
        """Reads the modules' PIN files at start and at every reload: each readable one is warned of once."""
        self._config = load_config(self.path, default_timeout, self.pin_files)  # ConfigError stops `serve`
        self.last_reload_successful = True
        self.last_success_timestamp = time.time()
        self.after_reload: list[Callable[[], None]] = []
        """Called after every successful reload: the Room sessions close, as credentials may have changed."""

    @property
    def config(self) -> ExporterConfig:
        return self._config

    def reload(self) -> ConfigError | None:
        """Re-read the file; on a mistake keep the running config and return the error (also logged)."""
        with self._lock:
            try:
                config = load_config(self.path, self.default_timeout, self.pin_files)
            except ConfigError as error:
                self.last_reload_successful = False
                log.error(
                    "config reload failed; keeping the previous config",
                    extra={"file": error.path, "detail": str(error)},
                )
                return error
            self._config = config
            self.last_reload_successful = True
            self.last_success_timestamp = time.time()
        log.info(
            "config reloaded",
            extra={"file": str(self.path), "detail": f"modules: {', '.join(config.modules)}"},
        )
        for hook in self.after_reload:
            hook()
        return None


class ReloadCollector(Collector):
    """The reload gauges of a ConfigHolder."""

    def __init__(self, holder: ConfigHolder) -> None:
        self._holder = holder

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "trueconf_exporter_config_last_reload_successful",
            "1 if the last load of --config.file worked, 0 if it failed and the previous config is in use.",
            value=int(self._holder.last_reload_successful),
        )
        yield GaugeMetricFamily(
            "trueconf_exporter_config_last_reload_success_timestamp_seconds",
            "When --config.file was last loaded successfully (Unix seconds).",
            value=self._holder.last_success_timestamp,
        )
