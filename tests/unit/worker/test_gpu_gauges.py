"""Per-GPU gauges keep bounded, current label sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ca4_schemas import GpuMetadataReported
from ca4_worker.core.gpu_fields import DCGM_LABELS, LABEL_VALUE_MAX_BYTES, bounded_label
from ca4_worker.core.metrics import GPU_REGISTRY, GpuGauges, gpu_exposition_bytes
from ca4_worker.domain.records import Position, PositionedEvent
from prometheus_client import REGISTRY

from tests.unit.worker.factories import (
    BASE_TIME,
    TENANT_A,
    TENANT_B,
    event_body,
    gpu_sample,
    positioned,
)


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
    # Dated a second apart: the newest sample wins by its time (then by event id), so two
    # events made in the same millisecond moved the series half the time.
    first = positioned(
        0,
        0,
        session_id="g-s1",
        occurred_at=BASE_TIME,
        gpus=[gpu_sample(0, uuid_="GPU-g1", utilization=5.0)],
    )
    gauges.update([first], now=0)
    assert _value("g-s1", "GPU-g1") == 5.0
    moved = positioned(
        0,
        1,
        session_id="g-s2",
        occurred_at=BASE_TIME + timedelta(seconds=1),
        gpus=[gpu_sample(0, uuid_="GPU-g1", utilization=9.0)],
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
    # At its cap a tenant's new GPUs wait for its own series to expire; they never replace them.
    assert flooded == [0, 1, 2, 3]


def test_a_tenant_over_its_cap_in_one_batch_keeps_its_cap() -> None:
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


# --- What one tenant can cost everyone (a hostile-tenant review: H4, M2) ------------------------


def _refused(tenant: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "ca4_worker_gpu_series_refused_total", {"tenant": tenant, "reason": reason}
    )
    return value or 0.0


def _exported(tenant: str) -> set[frozenset[tuple[str, str]]]:
    """The label set of each of ``tenant``'s GPUs exported now (one per series set)."""
    return {
        frozenset(sample.labels.items())
        for metric in GPU_REGISTRY.collect()
        for sample in metric.samples
        if sample.name == "DCGM_FI_DEV_GPU_UTIL" and sample.labels["tenant"] == tenant
    }


def _report(tenant: str, offset: int, uuid: str, **kwargs: object) -> PositionedEvent:
    return positioned(
        0,
        offset,
        session_id=f"{tenant}-session",
        tenant=tenant,
        gpus=[gpu_sample(0, uuid_=uuid)],
        **kwargs,
    )


def test_fresh_gpu_uuids_create_at_most_the_cap_of_series_sets_per_ttl() -> None:
    # Prometheus keeps every series it scraped for hours, so what must be bounded is the series
    # a tenant creates, not the series alive at once: new UUIDs in every report made 17,500 new
    # series a scrape, all within the cap.
    tenant, cap, ttl = "churn-uuids", 10, 60.0
    gauges = GpuGauges(ttl_s=ttl, max_series=1000, max_series_per_tenant=cap)
    created: list[int] = []
    seen: set[frozenset[tuple[str, str]]] = set()
    for scrape in range(12):  # one every 15 s: three TTLs
        reports = [
            _report(tenant, scrape * 8 + index, f"GPU-churn-{scrape}-{index}") for index in range(8)
        ]
        gauges.update(reports, now=scrape * 15.0)
        exported = _exported(tenant)
        created.append(len(exported - seen))
        seen |= exported

    assert max(sum(created[start : start + 4]) for start in range(9)) == cap  # 45 s < the TTL
    assert created == [8, 2, 0, 0, 0, 8, 2, 0, 0, 0, 8, 2]
    assert _refused(tenant, "tenant_cap") == 12 * 8 - len(seen)


def test_a_gpu_whose_labels_change_every_report_creates_at_most_the_cap_per_ttl() -> None:
    # New labels are a new series set for Prometheus too: the old set counts until a TTL after
    # its creation, so a GPU relabelled every report has no series once its tenant is at its cap.
    tenant, cap, ttl = "churn-labels", 3, 60.0
    gauges = GpuGauges(ttl_s=ttl, max_series=1000, max_series_per_tenant=cap)
    seen: set[frozenset[tuple[str, str]]] = set()
    exported_sets: list[int] = []
    for step in range(12):  # one every 10 s
        report = _report(
            tenant,
            step,
            "GPU-relabelled",
            occurred_at=BASE_TIME + timedelta(seconds=step),
            labels={"project": f"p{step}"},
        )
        gauges.update([report], now=step * 10.0)
        exported = _exported(tenant)
        exported_sets.append(len(exported))
        seen |= exported

    assert len(seen) == 2 * cap  # 110 s: two TTLs
    assert exported_sets == [1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert _refused(tenant, "tenant_cap") == 6


def test_a_gpu_moving_to_a_new_session_a_ttl_after_its_series_began_is_never_refused() -> None:
    tenant = "long-lived"
    gauges = GpuGauges(ttl_s=60, max_series=1000, max_series_per_tenant=1)
    gauges.update([_report(tenant, 0, "GPU-long", occurred_at=BASE_TIME)], now=0)
    later = BASE_TIME + timedelta(seconds=50)
    gauges.update([_report(tenant, 1, "GPU-long", occurred_at=later)], now=50)
    moved = positioned(
        0,
        2,
        session_id="long-2",
        tenant=tenant,
        occurred_at=later + timedelta(seconds=11),
        gpus=[gpu_sample(0, uuid_="GPU-long")],
    )
    gauges.update([moved], now=61)

    assert _value("long-2", "GPU-long", tenant) == 50.0
    assert _refused(tenant, "tenant_cap") == 0


def test_a_tenant_never_takes_a_series_from_one_that_holds_as_many() -> None:
    # Four tenants of 4 GPUs, then one reporting 10 (under its own cap of 10) with room for 4
    # more in the worker: the worker's least recently updated series used to go, so other
    # tenants' GPUs lost theirs every round.
    gauges = GpuGauges(ttl_s=600, max_series=20, max_series_per_tenant=10)
    victims = [
        _report(f"fair-victim-{tenant}", tenant * 4 + index, f"GPU-fair-{tenant}-{index}")
        for tenant in range(4)
        for index in range(4)
    ]
    hog = [_report("fair-hog", 100 + index, f"GPU-fair-hog-{index}") for index in range(10)]
    gauges.update(victims, now=0)
    for round_ in range(3):
        for reports, now in ((hog, 1 + 2 * round_), (victims, 2 + 2 * round_)):
            gauges.update(reports, now=now)

            assert [len(_exported(f"fair-victim-{tenant}")) for tenant in range(4)] == [4] * 4
            assert len(_exported("fair-hog")) == 4
    assert _refused("fair-hog", "series_max") == 3 * 6


def test_a_tenant_holding_fewer_takes_room_from_the_largest_for_good() -> None:
    gauges = GpuGauges(ttl_s=600, max_series=10, max_series_per_tenant=20)
    large = [_report("share-large", index, f"GPU-share-large-{index}") for index in range(10)]
    small = [_report("share-small", 10 + index, f"GPU-share-small-{index}") for index in range(2)]
    gauges.update(large, now=0)
    for now in (1, 2, 3):
        gauges.update(small, now=now)
        gauges.update(large, now=now)

    assert len(_exported("share-small")) == 2
    assert {dict(labels)["UUID"] for labels in _exported("share-large")} == {
        f"GPU-share-large-{index}" for index in range(2, 10)
    }
    assert _refused("share-large", "series_max") == 3 * 2


def test_two_tenants_at_the_worker_cap_do_not_trade_a_set_back_and_forth() -> None:
    # Six GPUs for five sets: each round the one left out took the other tenant's least
    # recently updated set, which took it back, and every set retired so counted against its
    # tenant's cap until the tenant was refused its own GPUs.
    gauges = GpuGauges(ttl_s=900, max_series=5, max_series_per_tenant=4)
    reports = {
        tenant: [_report(tenant, index, f"GPU-{tenant}-{index}") for index in range(3)]
        for tenant in ("trade-a", "trade-b")
    }
    exported = []
    for round_ in range(8):
        for reported in reports.values():
            gauges.update(reported, now=round_ * 15)
        exported.append((_exported("trade-a"), _exported("trade-b")))

    assert all(snapshot == exported[0] for snapshot in exported)
    assert _refused("trade-a", "tenant_cap") == _refused("trade-b", "tenant_cap") == 0


EMOJI = "\U0001f600"
"""Four bytes of UTF-8 each; the contract counts characters."""


def _longest_labels(tenant: str, index: int) -> PositionedEvent:
    """A report of one GPU with every label as long as the contract allows; two such GPUs'
    UUIDs differ only in their last characters."""
    longest = EMOJI * 128
    gpu = gpu_sample(0, uuid_=EMOJI * 120 + f"{index:08d}", name=longest) | {
        "index": 2**53,
        "pci_bus_id": longest,
        "mig": {"parent_uuid": longest, "gpu_instance_id": 2**53, "profile": longest},
    }
    body = event_body(
        session_id="s" * 127 + "x", gpus=[gpu], labels={"project": EMOJI * 256}, tenant=tenant
    )
    body["payload"]["host"]["hostname"] = longest
    return PositionedEvent(GpuMetadataReported.model_validate(body), Position(0, index))


def test_label_values_a_report_chooses_are_bounded_in_bytes() -> None:
    # 500 GPUs with such labels made a 64 MiB /metrics body of lines up to 4,418 bytes.
    tenant = "long-labels"
    gauges = GpuGauges(ttl_s=600, max_series=100)
    gauges.update([_longest_labels(tenant, index) for index in range(4)], now=0)
    samples = [
        sample
        for metric in GPU_REGISTRY.collect()
        for sample in metric.samples
        if sample.labels["tenant"] == tenant
    ]
    lines = [
        line
        for line in gpu_exposition_bytes().splitlines()
        if f'tenant="{tenant}"'.encode() in line
    ]

    values = [value for sample in samples for value in sample.labels.values()]
    assert max(len(value.encode()) for value in values) == LABEL_VALUE_MAX_BYTES
    assert max(map(len, lines)) < 800
    # The UUIDs differ only past the bound, and are still four GPUs with four series sets.
    assert len(gauges) == 4
    uuids = {sample.labels.get("UUID", sample.labels.get("gpu_uuid")) for sample in samples}
    assert len(uuids) == 4
    assert len(_exported(tenant)) == 4


def test_a_bounded_label_keeps_short_values_and_tells_long_ones_apart() -> None:
    uuid = "GPU-6b1a7c9e-4b5e-4b7e-9e6b-1a7c9e4b5e4b"
    assert bounded_label(uuid) == uuid
    assert bounded_label("é" * 32) == "é" * 32  # 64 bytes
    first, second = bounded_label("x" * 100 + "1"), bounded_label("x" * 100 + "2")
    assert first != second
    assert first.startswith("x" * 47 + "~")
    assert len(first.encode()) == len(second.encode()) == LABEL_VALUE_MAX_BYTES
    cut = bounded_label("é" * 33)  # 66 bytes, cut at a character boundary
    assert cut.startswith("é" * 23 + "~")
    assert len(cut.encode()) == LABEL_VALUE_MAX_BYTES - 1
