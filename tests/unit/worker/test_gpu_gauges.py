"""Per-GPU gauges keep bounded, current label sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ca4_worker.core.gpu_fields import DCGM_LABELS
from ca4_worker.core.metrics import GPU_REGISTRY, GpuGauges
from ca4_worker.domain.records import PositionedEvent

from tests.unit.worker.factories import TENANT_A, TENANT_B, gpu_sample, positioned


def _value(session: str, uuid: str, tenant: str = TENANT_A) -> float | None:
    return GPU_REGISTRY.get_sample_value(
        "ca4_gpu_utilization_pct",
        {"session_id": session, "gpu_uuid": uuid, "gpu_name": "Tesla T4", "tenant": tenant},
    )


def _dcgm_values(uuid: str) -> dict[str, float]:
    """``DCGM_FI_DEV_GPU_UTIL`` of ``uuid`` per tenant label."""
    found: dict[str, float] = {}
    for metric in GPU_REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "DCGM_FI_DEV_GPU_UTIL" and sample.labels["UUID"] == uuid:
                assert set(sample.labels) == set(DCGM_LABELS)
                found[sample.labels["tenant"]] = sample.value
    return found


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


def test_another_tenant_cannot_replace_a_tenants_series_of_the_same_gpu() -> None:
    gauges = GpuGauges(ttl_s=600, max_series=10)
    now = datetime.now(UTC)
    uuid = "GPU-victim"

    def report(offset: int, tenant: str, at: datetime, utilization: float) -> PositionedEvent:
        return positioned(
            0,
            offset,
            session_id="victim-session",
            tenant=tenant,
            occurred_at=at,
            received_at=now + timedelta(seconds=offset),
            gpus=[gpu_sample(0, uuid_=uuid, utilization=utilization)],
        )

    gauges.update([report(0, TENANT_B, now, 80.0)], now=0)
    # Tenant A names B's GPU, session and labels, dated as far ahead as the processor allows.
    gauges.update([report(1, TENANT_A, now + timedelta(minutes=4, seconds=59), 1.0)], now=1)
    assert _value("victim-session", uuid, TENANT_B) == 80.0
    assert _dcgm_values(uuid) == {TENANT_B: 80.0, TENANT_A: 1.0}

    gauges.update([report(2, TENANT_B, now + timedelta(seconds=2), 70.0)], now=2)
    assert _value("victim-session", uuid, TENANT_B) == 70.0
    assert _dcgm_values(uuid) == {TENANT_B: 70.0, TENANT_A: 1.0}


def test_a_report_dated_ahead_of_its_receipt_does_not_freeze_the_series() -> None:
    gauges = GpuGauges(ttl_s=600, max_series=10)
    now = datetime.now(UTC)
    ahead = positioned(
        0,
        0,
        session_id="ahead",
        occurred_at=now + timedelta(minutes=4, seconds=59),
        received_at=now,
        gpus=[gpu_sample(0, uuid_="GPU-ahead", utilization=1.0)],
    )
    real = positioned(
        0,
        1,
        session_id="ahead",
        occurred_at=now + timedelta(seconds=1),
        gpus=[gpu_sample(0, uuid_="GPU-ahead", utilization=70.0)],
    )
    gauges.update([ahead], now=0)
    assert _value("ahead", "GPU-ahead") == 1.0
    gauges.update([real], now=1)
    assert _value("ahead", "GPU-ahead") == 70.0
    # In one batch too, in either order.
    for batch in ([ahead, real], [real, ahead]):
        fresh = GpuGauges(ttl_s=600, max_series=10)
        fresh.update(batch, now=0)
        assert _value("ahead", "GPU-ahead") == 70.0


def test_one_tenants_flood_of_new_gpus_does_not_evict_another_tenants_series() -> None:
    gauges = GpuGauges(ttl_s=600, max_series=10, max_series_per_tenant=4)
    kept = positioned(
        0, 0, session_id="quiet", tenant=TENANT_B, gpus=[gpu_sample(0, uuid_="GPU-quiet")]
    )
    gauges.update([kept], now=0)
    for index in range(20):
        flood = positioned(
            1,
            index,
            session_id=f"flood-{index}",
            tenant=TENANT_A,
            gpus=[gpu_sample(0, uuid_=f"GPU-flood-{index}")],
        )
        gauges.update([flood], now=1 + index)

    assert _value("quiet", "GPU-quiet", TENANT_B) == 50.0
    assert len(gauges) == 5
    flooded = [
        index for index in range(20) if _value(f"flood-{index}", f"GPU-flood-{index}") is not None
    ]
    assert flooded == [16, 17, 18, 19]


def test_a_tenant_over_its_share_loses_its_own_oldest_series_in_one_batch() -> None:
    gauges = GpuGauges(ttl_s=600, max_series=100, max_series_per_tenant=3)
    events = [
        positioned(
            0,
            index,
            session_id=f"batch-{index}",
            occurred_at=datetime.now(UTC) + timedelta(milliseconds=index),
            gpus=[gpu_sample(0, uuid_=f"GPU-batch-{index}")],
        )
        for index in range(6)
    ]
    gauges.update(events, now=0)
    assert len(gauges) == 3
    gauges.sweep(now=601)
    assert len(gauges) == 0
