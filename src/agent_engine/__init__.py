"""Deterministic Agent Execution Engine."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("agent-engine")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
