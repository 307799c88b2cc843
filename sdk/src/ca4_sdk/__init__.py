"""CA4 SDK: collect GPU metadata and report it to a CA4 edge API without blocking the notebook.

>>> from ca4_sdk import Reporter
>>> reporter = Reporter(url="https://edge.example", api_key="...", labels={"project": "demo"})
>>> reporter.start()  # returns at once; reports every 15 s from a background thread
"""

from ca4_sdk._version import SDK_NAME, SDK_VERSION
from ca4_sdk.collectors import AutoCollector, CollectorResult
from ca4_sdk.reporter import DeliveryResult, Reporter, ReporterStats

__version__ = SDK_VERSION

__all__ = [
    "SDK_NAME",
    "SDK_VERSION",
    "AutoCollector",
    "CollectorResult",
    "DeliveryResult",
    "Reporter",
    "ReporterStats",
    "__version__",
]
