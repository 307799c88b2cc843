"""CA4 SDK: collect GPU metadata and report it to a CA4 edge API without blocking the notebook.

>>> from ca4_sdk import Reporter, stop_all
>>> reporter = Reporter(url="https://edge.example", api_key="...", labels={"project": "demo"})
>>> reporter.start()  # returns at once; reports every 15 s from a background thread
>>> stop_all()  # stops every reporter of this process (a lost handle's too)
"""

from ca4_sdk._version import SDK_NAME, SDK_VERSION
from ca4_sdk.collectors import AutoCollector, CollectorResult
from ca4_sdk.logs import show_logs
from ca4_sdk.reporter import DeliveryResult, Reporter, ReporterStats, stop_all

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
    "show_logs",
    "stop_all",
]
