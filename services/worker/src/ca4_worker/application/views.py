"""Read models the API returns (never a database document or an event object)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ca4_worker.domain.records import WeighedPage

ItemT = TypeVar("ItemT")
RowT = TypeVar("RowT")


class SessionView(BaseModel):
    """One runtime session, derived from its events."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    tenant: str
    """The tenant whose key reported the session first, its owner."""
    first_seen: datetime
    last_seen: datetime
    sample_count: int
    gpu_models: list[str]
    """Distinct GPU models seen, at most ``SESSION_MAX_GPU_MODELS`` (64)."""
    gpu_models_dropped: int = 0
    """GPU samples whose model was not recorded because the session reached that cap."""
    gpus_dropped: int = 0
    """GPU samples left out of ``/v1/gpus`` and of usage because their session had already
    reported ``SESSION_MAX_GPUS`` (64) other GPUs."""
    peak_memory_used_mib: float | None
    mean_utilization_pct: float | None
    """Mean GPU utilisation over every GPU sample of the session that reported one."""
    labels: dict[str, str]
    runtime: str
    hostname: str
    driver_version: str | None = None
    """The NVIDIA driver version of the session's latest report (none: it reported none)."""


class GpuView(BaseModel):
    """One GPU and its latest sample (latest by ``occurred_at`` capped at ``received_at``, ties
    broken by event id)."""

    model_config = ConfigDict(frozen=True)

    gpu_uuid: str
    tenant: str
    """The tenant that reported this sample (each tenant has its own view of a GPU UUID)."""
    gpu_name: str
    session_id: str
    last_seen: datetime
    """The sample's ``occurred_at``, or its ``received_at`` when the client's clock dated it
    later than that."""
    event_id: str
    sample: dict[str, Any]


class EventStatus(BaseModel):
    """Where an event is on the read side (read-your-writes for clients)."""

    event_id: str
    stored: bool
    projected: bool
    partition: int | None = None
    offset: int | None = None
    session_id: str | None = None
    received_at: datetime | None = None
    event: dict[str, Any] | None = None


class Page(BaseModel, Generic[ItemT]):
    """A page of results and the cursor of the next one (``None`` on the last page)."""

    items: list[ItemT]
    next_cursor: str | None = None


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
