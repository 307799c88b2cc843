"""The CA4 event contract: versioned, frozen Pydantic models shared by every service.

Import the newest models by their unversioned names (:data:`GpuMetadataReported`,
:data:`GpuMetadataReport`); read anything off the wire with :func:`decode_event`.
"""

from ca4_schemas.bounded import bounded_text
from ca4_schemas.constants import (
    EVENT_TYPE_GPU_METADATA_REPORTED,
    LEGACY_TENANT,
    TOPIC_GPU_METADATA,
    TOPIC_GPU_METADATA_DLQ,
)
from ca4_schemas.upcasting import (
    LATEST_SCHEMA_VERSION,
    EventDecodeError,
    GpuMetadataReport,
    GpuMetadataReported,
    InvalidJsonError,
    UnknownSchemaVersionError,
    decode_event,
    encode_event,
    upcast,
)
from ca4_schemas.v1 import (
    CollectorStatus,
    GpuMetadataPayloadV1,
    GpuProcess,
    GpuSample,
    HostFacts,
    MigInstance,
    Source,
)
from ca4_schemas.weight import OBJECT_WEIGHT, STRING_WEIGHT, record_weight

__all__ = [
    "EVENT_TYPE_GPU_METADATA_REPORTED",
    "LATEST_SCHEMA_VERSION",
    "LEGACY_TENANT",
    "OBJECT_WEIGHT",
    "STRING_WEIGHT",
    "TOPIC_GPU_METADATA",
    "TOPIC_GPU_METADATA_DLQ",
    "CollectorStatus",
    "EventDecodeError",
    "GpuMetadataPayloadV1",
    "GpuMetadataReport",
    "GpuMetadataReported",
    "GpuProcess",
    "GpuSample",
    "HostFacts",
    "InvalidJsonError",
    "MigInstance",
    "Source",
    "UnknownSchemaVersionError",
    "bounded_text",
    "decode_event",
    "encode_event",
    "record_weight",
    "upcast",
]
