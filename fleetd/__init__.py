"""fleetd: a cluster-level init system, a faithful and faster successor of CoreOS fleet."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fleetd")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
