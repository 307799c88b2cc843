"""AsyncAPI docs of what the processor publishes, at ``/asyncapi`` (HTML) and ``/asyncapi.json``.

FastStream writes the document from a declared publisher. Its broker here only describes the
topic and is never connected: events go out on the processor's own producer (``publishing``).
"""

from __future__ import annotations

from typing import Any

from ca4_schemas import GpuMetadataReported
from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI, get_asyncapi_html

import ca4_processor
from ca4_processor.core.config import Settings


def asyncapi_router(settings: Settings) -> APIRouter:
    """Routes serving the AsyncAPI document of the events topic."""
    broker = KafkaBroker(
        settings.KAFKA_BOOTSTRAP_SERVERS,
        description="Kafka cluster holding the gpu-metadata event log",
    )
    broker.publisher(
        settings.KAFKA_TOPIC,
        title=f"{settings.KAFKA_TOPIC}:publish",
        description="One gpu.metadata.reported event per accepted report; key = session_id.",
        schema=GpuMetadataReported,
    )
    specification = AsyncAPI(
        broker,
        title="CA4 processor events",
        version=ca4_processor.__version__,
        description="What the processor publishes for every accepted report.",
    ).to_specification()
    router = APIRouter(include_in_schema=False)

    @router.get("/asyncapi")
    async def read_asyncapi_page() -> HTMLResponse:
        """The AsyncAPI document, rendered."""
        return HTMLResponse(get_asyncapi_html(specification, try_it_out_path=None))

    @router.get("/asyncapi.json")
    async def read_asyncapi_document() -> dict[str, Any]:
        """The AsyncAPI document."""
        document: dict[str, Any] = specification.to_jsonable()
        return document

    return router
