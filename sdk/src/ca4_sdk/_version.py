"""The SDK version sent in every report's ``source``."""

from importlib.metadata import PackageNotFoundError, version

try:
    SDK_VERSION = version("ca4-sdk")
except PackageNotFoundError:  # run from a source tree without installing (e.g. a GPU probe)
    SDK_VERSION = "0.1.0"

SDK_NAME = "ca4-sdk"
