"""The read models' pure state types: folding, merging and their stored documents."""

from __future__ import annotations

from datetime import timedelta

from ca4_worker.domain.projection import (
    SessionState,
    fold_session,
    gpu_document_id,
    gpus_kept,
    group_by_session,
    is_tenancy_gpu_document,
    latest_gpu_samples,
)
from ca4_worker.persistence.documents import new_session_document, session_state
from ca4_worker.persistence.memory import InMemoryProjections

from tests.unit.worker.factories import (
    BASE_TIME,
    TENANT_A,
    dated_ahead,
    gpu_sample,
    positioned,
    report_of_gpus,
)


def test_merging_deltas_equals_folding_every_event_at_once() -> None:
    events = [
        positioned(
            0,
            offset,
            session_id="s",
            occurred_at=BASE_TIME + timedelta(seconds=(offset * 7) % 5),
            gpus=[gpu_sample(0, name=f"model-{offset % 3}", utilization=10.0 * offset)],
            driver_version=f"55{offset}.0",
        )
        for offset in range(6)
    ]

    merged = fold_session(events[:2]).state.apply(fold_session(events[2:]).state)

    assert merged == fold_session(events).state


def test_the_session_shows_the_driver_of_its_latest_report() -> None:
    events = [
        positioned(0, 0, session_id="s", driver_version="535.104.05"),
        positioned(0, 1, session_id="s", driver_version="550.54.15"),
    ]

    view = fold_session(events).state.to_view("s")

    assert view.driver_version == "550.54.15"


def test_a_document_from_before_a_field_existed_reads_as_its_default() -> None:
    document = new_session_document(fold_session([positioned(0, 0, session_id="s")]))
    del document["driver_version"], document["gpu_models_dropped"]
    del document["gpu_uuids"], document["gpus_dropped"]

    state = session_state(document)

    assert (state.driver_version, state.gpu_models_dropped) == (None, 0)
    assert (state.gpu_uuids, state.gpus_dropped) == ([], 0)
    assert isinstance(state, SessionState)


def test_a_gpu_sample_dated_past_its_receipt_counts_as_received() -> None:
    ahead = dated_ahead()
    real = positioned(
        0,
        1,
        session_id="s",
        occurred_at=BASE_TIME + timedelta(seconds=1),
        gpus=[gpu_sample(0, utilization=70.0)],
    )

    (alone,) = latest_gpu_samples([ahead])
    (latest,) = latest_gpu_samples([ahead, real])

    assert alone.occurred_at == BASE_TIME
    assert alone.apply(latest) == latest
    assert latest.sample["utilization_gpu_pct"] == 70.0


def test_the_gpus_a_session_keeps_are_those_its_write_folds() -> None:
    first = [f"GPU-U-{index:02d}" for index in range(64)]
    second = [f"GPU-V-{index:02d}" for index in range(64)]
    both = group_by_session([report_of_gpus(0, first), report_of_gpus(1, second)])

    assert gpus_kept(group_by_session([report_of_gpus(0, first)]), {}) == {}  # all fit
    assert gpus_kept(both, {}) == {"s": set(first)}
    assert gpus_kept(both, {"s": {"applied": {"p0": 0}, "gpu_uuids": first}}) == {"s": set(first)}
    # A document an older worker wrote lists none: the first report is applied (and
    # redelivered), so the second's GPUs are the ones the session write keeps.
    assert gpus_kept(both, {"s": {"applied": {"p0": 0}}}) == {"s": set(second)}


def test_only_a_tenancy_gpu_documents_id_names_its_tenant_and_uuid() -> None:
    tenancy = {"_id": gpu_document_id(TENANT_A, "MIG-GPU-1/2/0"), "tenant": TENANT_A}
    assert is_tenancy_gpu_document(tenancy | {"gpu_uuid": "MIG-GPU-1/2/0"})
    assert not is_tenancy_gpu_document({"_id": "GPU-x", "gpu_uuid": "GPU-x"})  # before tenancy
    # Another tenant's UUID spelling the id names neither.
    assert not is_tenancy_gpu_document(tenancy | {"tenant": "b", "gpu_uuid": "x/MIG-GPU-1/2/0"})


async def test_the_fake_prefers_a_tenants_newer_gpu_to_a_pre_tenancy_document() -> None:
    # As tests/integration/worker/test_mongo_adapters.py does on FerretDB.
    projections = InMemoryProjections()
    await projections.apply([positioned(0, 0, gpus=[gpu_sample(0, uuid_="GPU-x")])])
    [stored] = projections.gpu_docs.values()
    legacy = {**stored, "_id": "GPU-x", "session_id": "before-tenancy"}
    legacy["last_seen"] -= timedelta(days=1)
    del legacy["tenant"]
    projections.gpu_docs["GPU-x"] = legacy

    found = await projections.gpu("GPU-x", tenant=None)

    assert found is not None
    assert (found.tenant, found.session_id) == (TENANT_A, stored["session_id"])
