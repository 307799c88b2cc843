"""Schema version 2 of the ``gpu.metadata.reported`` event: version 1 plus its owner.

The processor stamps ``key_id`` and ``tenant`` from the API key that authenticated the request;
the client never sends them (the report model forbids extra fields, so a body that tries is
refused with ``422``). Version 1 events are read through :func:`upcast_v1_v2`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, ValidationInfo, field_validator

from ca4_schemas.constants import LEGACY_KEY_ID, LEGACY_TENANT
from ca4_schemas.types import KeyId, TenantId
from ca4_schemas.v1 import GpuMetadataReportV1, ReportEnvelope, event_received_at


class GpuMetadataReportedV2(ReportEnvelope):
    """The immutable event on Kafka and in the event store."""

    schema_version: Literal[2] = 2
    """Version of this contract: the integer 2."""
    received_at: AwareDatetime
    """When the processor accepted the report, by the processor's clock."""
    key_id: KeyId
    """Id of the API key that sent the report (stamped by the processor, never by the client)."""
    tenant: TenantId
    """Owner of that key, and so of the event and its session (stamped by the processor)."""

    @field_validator("received_at")
    @classmethod
    def _received_in_utc(cls, received_at: datetime, info: ValidationInfo) -> datetime:
        return event_received_at(received_at, info)

    @classmethod
    def stamped(
        cls, report: GpuMetadataReportV1, *, received_at: datetime, key_id: str, tenant: str
    ) -> GpuMetadataReportedV2:
        """The event the processor publishes for ``report``, sent with key ``key_id``.

        The report is already valid and the key's id and tenant were validated when the key
        ring loaded them, so only ``received_at`` is checked: re-validating every field would
        double the processor's CPU cost per event.
        """
        if received_at.tzinfo is None or received_at.utcoffset() is None:
            raise ValueError("received_at must be timezone-aware")
        fields = dict(report)
        fields["schema_version"] = 2
        return cls.model_construct(
            **fields, received_at=received_at.astimezone(UTC), key_id=key_id, tenant=tenant
        )


def upcast_v1_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """A version-1 event recorded no key: it belongs to :data:`LEGACY_TENANT`.

    Any ``key_id``/``tenant`` already in a version-1 object is overwritten: version 1 never
    carried them, so they can only be forged.
    """
    return {**raw, "key_id": LEGACY_KEY_ID, "tenant": LEGACY_TENANT}
