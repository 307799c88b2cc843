"""Read models the API returns (never a database document or an event object)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ca4_worker.domain.records import WeighedPage

ItemT = TypeVar("ItemT")
RowT = TypeVar("RowT")


VIEW_CONFIG = ConfigDict(frozen=True, use_attribute_docstrings=True)
"""Read models are immutable, and each field's docstring is its description in the OpenAPI
document (clients read the fields' meaning there)."""


class SessionView(BaseModel):
    """One runtime session, derived from its events."""

    model_config = VIEW_CONFIG

    session_id: str
    """The session's id, as its reports named it (``session_id``)."""
    tenant: str
    """The tenant whose key reported the session first, its owner."""
    first_seen: datetime
    """The earliest report's ``occurred_at`` (never later than its ``received_at``)."""
    last_seen: datetime
    """The newest report's ``occurred_at`` (never later than its ``received_at``)."""
    sample_count: int
    """Reports projected into the session (one per event, however many GPUs it held)."""
    gpu_models: list[str]
    """Distinct GPU models seen, in the order first met, at most ``SESSION_MAX_GPU_MODELS``
    (64)."""
    gpu_models_dropped: int = 0
    """GPU samples (one per GPU per report, not distinct models) whose model was not added to
    ``gpu_models`` because the session had already recorded 64 other models."""
    gpus_dropped: int = 0
    """GPU samples (one per GPU per report, not distinct GPUs) left out of ``/v1/gpus`` and of
    usage because their GPU was not among the first ``SESSION_MAX_GPUS`` (64) the session
    reported: a session reporting 65 GPUs in each of 10 reports shows 10, not 1."""
    peak_memory_used_mib: float | None
    """The most GPU memory in use (MiB) in any GPU sample of the session; ``null``: no sample
    reported memory."""
    mean_utilization_pct: float | None
    """Mean GPU utilisation over every GPU sample of the session that reported one."""
    labels: dict[str, str]
    """The labels of the session's newest report projected (the latest report wins)."""
    runtime: str
    """Where the session runs (``colab``, ``jupyter``, ...), as its newest report said."""
    hostname: str
    """The host's name, as the session's newest report said."""
    driver_version: str | None = None
    """The NVIDIA driver version of the session's latest report (none: it reported none)."""


class GpuView(BaseModel):
    """One GPU and its latest sample (latest by ``occurred_at`` capped at ``received_at``, ties
    broken by event id)."""

    model_config = VIEW_CONFIG

    gpu_uuid: str
    """The GPU's UUID as reported (``GPU-...``, or ``MIG-...`` for a MIG device)."""
    tenant: str
    """The tenant that reported this sample (each tenant has its own view of a GPU UUID)."""
    gpu_name: str
    """The GPU's model name in the latest sample (e.g. ``Tesla T4``)."""
    session_id: str
    """The session whose report holds the latest sample."""
    last_seen: datetime
    """The sample's ``occurred_at``, or its ``received_at`` when the client's clock dated it
    later than that."""
    event_id: str
    """The event (report) that holds the latest sample."""
    sample: dict[str, Any]
    """The latest sample's GPU fields as reported (utilisation, memory, temperature, ...;
    the report schema's GPU object)."""


class EventStatus(BaseModel):
    """Where an event is on the read side (read-your-writes for clients)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    event_id: str
    """The event id asked about."""
    stored: bool
    """Whether the worker has stored the event (``false`` too for another tenant's event)."""
    projected: bool
    """Whether the session and GPU read models include the event: a read now sees it."""
    partition: int | None = None
    """The Kafka partition the event was read from; ``null`` when not stored."""
    offset: int | None = None
    """The event's offset in that partition; ``null`` when not stored."""
    session_id: str | None = None
    """The event's session; ``null`` when not stored."""
    received_at: datetime | None = None
    """When the processor accepted the event; ``null`` when not stored."""
    event: dict[str, Any] | None = None
    """The stored event in the newest schema version; ``null`` when not stored."""


class Page(BaseModel, Generic[ItemT]):
    """A page of results and the cursor of the next one (``None`` on the last page)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    items: list[ItemT]
    """This page's items, in the list's order; may be fewer than ``limit`` on any page (a page
    also ends at ``CA4_READ_PAGE_MAX_BYTES``)."""
    next_cursor: str | None = None
    """Pass as ``cursor`` for the next page; ``null`` only on the last page (only ``null`` ends
    the list)."""


async def read_page(
    rows: AsyncIterable[RowT],
    *,
    limit: int,
    max_bytes: int | None,
    weight: Callable[[RowT], int],
) -> tuple[list[RowT], bool]:
    """The rows of one page from ``rows`` fetched in cursor order: at most ``limit``, ending
    early once they weigh ``max_bytes`` (``None``: no weight bound; a page holds at least one
    row); and whether a row follows them, so there is a next page.

    A count alone let one page of heavy GPU documents (hundreds of processes each) hold over
    100 MB ("Tenancy" in ``docs/architecture.md``); the rows are weighed by their stored bytes,
    which the reader has without decoding them.
    """
    page = WeighedPage[RowT](limit, max_bytes)
    full = False
    async for row in rows:
        if full:
            return page.items, True
        full = page.add(row, 0 if max_bytes is None else weight(row))
    return page.items, False


def page_of(
    rows: Sequence[RowT],
    *,
    more: bool,
    view: Callable[[RowT], ItemT],
    cursor: Callable[[RowT], str],
) -> Page[ItemT]:
    """The page of ``rows`` (:func:`read_page`); its ``next_cursor`` is the last row's when
    ``more`` follow."""
    return Page(items=[view(row) for row in rows], next_cursor=cursor(rows[-1]) if more else None)


class SessionQuery(BaseModel):
    """Filters and paging for sessions; results are ordered by session id."""

    tenant: str | None
    """Only this tenant's sessions; ``None`` (a ``read:all`` key) for every tenant's. Required,
    so no caller reads across tenants by forgetting it."""
    label: tuple[str, str] | None = None
    gpu_model: str | None = None
    runtime: str | None = None
    seen_since: datetime | None = None
    seen_until: datetime | None = None
    after: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    max_bytes: int | None = None
    """A page ends early once its stored documents weigh this (:func:`read_page`)."""


class UnknownCursorError(ValueError):
    """A GPU cursor that names no tenant and no document (``422``): not a ``next_cursor``."""


class GpuQuery(BaseModel):
    """Filters and paging for GPUs; ordered by tenant, then GPU UUID."""

    tenant: str | None
    """Only this tenant's GPUs; ``None`` (a ``read:all`` key) for every tenant's. Required."""
    session_id: str | None = None
    gpu_name: str | None = None
    after: str | None = None
    """The last document id of the previous page (``<tenant>/<gpu uuid>``; the route reads a
    tenant's bare cursor as that tenant's GPU). A bare one with ``tenant=None`` must be the
    id of a pre-tenancy document not rebuilt yet (their ids are bare UUIDs)."""
    limit: int = Field(default=50, ge=1, le=500)
    max_bytes: int | None = None
    """A page ends early once its stored documents weigh this (:func:`read_page`)."""

    @property
    def after_names_no_tenant(self) -> bool:
        """Whether ``after`` is a bare id (``read:all`` only): the reader must find a
        pre-tenancy document with that id, or raise :class:`UnknownCursorError`."""
        return self.tenant is None and self.after is not None and "/" not in self.after
