"""The worker's own version (stamped on dead letters)."""

from importlib.metadata import PackageNotFoundError, version

try:
    WORKER_VERSION = version("ca4-worker")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    WORKER_VERSION = "0+unknown"
