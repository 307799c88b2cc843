"""Per-GPU gauges keep bounded, current label sets."""

from __future__ import annotations

from ca4_worker.core.metrics import GpuGauges
from prometheus_client import REGISTRY

from tests.unit.worker.factories import gpu_sample, positioned


def _value(session: str, uuid: str) -> float | None:
    return REGISTRY.get_sample_value(
        "ca4_gpu_utilization_pct",
        {"session_id": session, "gpu_uuid": uuid, "gpu_name": "Tesla T4"},
    )


def test_series_move_with_the_session_and_expire() -> None:
    gauges = GpuGauges(ttl_s=60, max_series=10)
    first = positioned(
        0, 0, session_id="g-s1", gpus=[gpu_sample(0, uuid_="GPU-g1", utilization=5.0)]
    )
    gauges.update([first], now=0)
    assert _value("g-s1", "GPU-g1") == 5.0
    moved = positioned(
        0, 1, session_id="g-s2", gpus=[gpu_sample(0, uuid_="GPU-g1", utilization=9.0)]
    )
    gauges.update([moved], now=1)
    assert _value("g-s1", "GPU-g1") is None
    assert _value("g-s2", "GPU-g1") == 9.0
    gauges.sweep(now=100)
    assert _value("g-s2", "GPU-g1") is None
    assert len(gauges) == 0


def test_cardinality_is_capped() -> None:
    gauges = GpuGauges(ttl_s=600, max_series=3)
    events = [
        positioned(
            0, index, session_id=f"cap-{index}", gpus=[gpu_sample(0, uuid_=f"GPU-cap-{index}")]
        )
        for index in range(5)
    ]
    gauges.update(events, now=0)
    assert len(gauges) == 3
