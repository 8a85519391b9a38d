"""trueconf-exporter: a Prometheus exporter for the outgoing file requests of TrueConf Room endpoints."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trueconf-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
