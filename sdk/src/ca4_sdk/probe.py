"""What the collector sees on this host, as one dict (for ``ca4 sdk probe`` and ``python -m``)."""

from __future__ import annotations

from typing import Any

from ca4_sdk.collectors import AutoCollector
from ca4_sdk.host import collect_host
from ca4_sdk.report import build_report
from ca4_sdk.runtime import detect_runtime, stable_session_id


def probe(prefer: str | None = None) -> dict[str, Any]:
    """Collect once with the chosen (or best) collector and return the full report dict."""
    runtime = detect_runtime()
    collector = AutoCollector(prefer=prefer)
    try:
        collection = collector.collect()
    finally:
        collector.close()
    host = collect_host(
        driver_version=collection.driver_version,
        cuda_version=collection.cuda_version,
        nvml_version=collection.nvml_version,
    )
    return build_report(
        session_id=stable_session_id(runtime),
        runtime=runtime,
        host=host,
        collection=collection,
        labels={"probe": "true"},
    )
