"""Names every service agrees on: topics, the event type and Kafka header keys."""

from collections.abc import Mapping
from typing import Any, Final

EVENT_TYPE_GPU_METADATA_REPORTED: Final = "gpu.metadata.reported"
"""The ``event_type`` of every GPU metadata report."""

LEGACY_TENANT: Final = "legacy"
"""The tenant of events published before tenancy (schema version 1), set by the upcaster.

No API key may belong to it, so pre-tenancy data is visible to ``read:all`` keys only and no
tenant can write into a pre-tenancy session."""
LEGACY_KEY_ID: Final = "legacy"
"""The key id the upcaster gives version-1 events (which recorded none)."""
SESSION_OWNERS: Final = "session_owners"
"""The collection of session claims (``_id`` = session id, ``tenant``): the processor claims new
sessions there; the worker claims pre-tenancy ones for :data:`LEGACY_TENANT`."""
PRIMARY_READS: Final[Mapping[str, Any]] = {
    "readPreference": "primary",
    "readPreferenceTags": "",
    "maxStalenessSeconds": -1,
}
"""pymongo client options that send every read to the primary, whatever the database URL says:
both services read back what they have just written. They replace the URL's read preference,
tags and staleness (pymongo refuses ``primary`` combined with either of the last two)."""

TOPIC_GPU_METADATA: Final = "gpu-metadata"
"""Default topic for reported events (configurable per service)."""

TOPIC_GPU_METADATA_DLQ: Final = "gpu-metadata.dlq"
"""Default dead-letter topic: original bytes, the error in headers."""

HEADER_TRACEPARENT: Final = "traceparent"
"""W3C trace context of the request that produced the event."""
HEADER_EVENT_ID: Final = "ca4-event-id"
"""The event id, so tools can find an event without decoding the body."""
HEADER_SCHEMA_VERSION: Final = "ca4-schema-version"
"""The body's ``schema_version``, so consumers can route before decoding."""
HEADER_TENANT: Final = "ca4-tenant"
"""The tenant of the key that sent the event, set by the processor (a client cannot set
headers), and on dead letters the tenant of the event (or of this header when the record did not
decode), so every letter that can be attributed is."""
HEADER_CONTENT_TYPE: Final = "content-type"
"""Always ``application/json`` for events."""
HEADER_ERROR_CLASS: Final = "ca4-error-class"
"""Dead letters: a stable error class such as ``invalid_json`` or ``unknown_schema_version``."""
HEADER_ERROR_MESSAGE: Final = "ca4-error-message"
"""Dead letters: the human-readable error."""
HEADER_SOURCE_TOPIC: Final = "ca4-source-topic"
"""Dead letters: the topic the message came from."""
HEADER_SOURCE_PARTITION: Final = "ca4-source-partition"
"""Dead letters: the partition the message came from."""
HEADER_SOURCE_OFFSET: Final = "ca4-source-offset"
"""Dead letters: the offset the message came from."""
HEADER_WORKER_VERSION: Final = "ca4-worker-version"
"""Dead letters: the version of the worker that rejected it."""
