"""fleetd: a cluster-level init system, a faithful and faster successor of CoreOS fleet."""

# The single source of the version: pyproject.toml reads it from here (importing
# importlib.metadata to ask the installed package would cost fleetctl ~0.1 s at every start).
__version__ = "0.1.0"
