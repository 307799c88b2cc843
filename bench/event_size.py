"""Bytes per event on the ``gpu-metadata`` topic, for the Kafka capacity table.

Synthetic sessions of the SDK (its real report shape: ``build_report`` with a full GPU sample per
GPU) post through the real processor app into a topic of the dev stack's Kafka; the records are
read back and measured as the broker stores them (key + value + headers), per GPU count. Topic
compression (``compression.type=gzip``) compresses each producer batch; at fleet rates with a 2 ms
linger a batch holds about one record, so the ratio that counts is gzip of one record (the ratio
of a 20-record batch of one session is shown as the best case).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import statistics
import uuid
from pathlib import Path
from typing import Any

from bench.common import delete_topic
from tests.integration.processor.conftest import AUTH, TopicReader, start_processor
from tests.support.reports import h100_session
from tests.support.services import endpoints

GPU_COUNTS = (0, 1, 2, 4, 8)
REPORTS_PER_SHAPE = 20


async def measure() -> dict[str, Any]:
    services = endpoints()
    topic = f"ca4-event-size-{uuid.uuid4().hex[:8]}"
    try:
        lifespan, client = await start_processor(services, topic)
        try:
            for gpus in GPU_COUNTS:
                shape = h100_session(gpus)
                for _ in range(REPORTS_PER_SHAPE):
                    response = await client.post(
                        "/v1/metadata", json=shape.next_report(), headers=AUTH
                    )
                    response.raise_for_status()
        finally:
            await client.aclose()
            await lifespan.__aexit__(None, None, None)
        records = await TopicReader(services.kafka_bootstrap_servers, topic).read(
            len(GPU_COUNTS) * REPORTS_PER_SHAPE
        )
    finally:
        await delete_topic(services.kafka_bootstrap_servers, topic)
    by_gpus: dict[int, list[bytes]] = {gpus: [] for gpus in GPU_COUNTS}
    sizes: dict[int, list[int]] = {gpus: [] for gpus in GPU_COUNTS}
    for record in records:
        gpus = len(json.loads(record.value)["payload"]["gpus"])
        header_bytes = sum(len(k) + len(v) for k, v in record.headers)
        sizes[gpus].append(len(record.key or b"") + len(record.value) + header_bytes)
        by_gpus[gpus].append(record.value)
    shapes = {}
    for gpus in GPU_COUNTS:
        values = by_gpus[gpus]
        batch = b"".join(values)
        single = statistics.mean(len(gzip.compress(v)) / len(v) for v in values)
        shapes[str(gpus)] = {
            "bytes_per_event": round(statistics.mean(sizes[gpus])),
            "gzip_ratio_one_record": round(single, 3),
            "gzip_ratio_20_record_batch": round(len(gzip.compress(batch)) / len(batch), 3),
        }
    summary = ", ".join(
        f"{gpus} GPU{'s' if gpus != 1 else ''} {shapes[str(gpus)]['bytes_per_event']:,} B"
        for gpus in GPU_COUNTS
    )
    return {
        "topic_records": len(records),
        "by_gpu_count": shapes,
        "summary": f"bytes per event on the topic: {summary}",
    }


def run(results_dir: Path) -> dict[str, Any]:
    """The bench part entry point."""
    return asyncio.run(measure())


if __name__ == "__main__":
    print(asyncio.run(measure()))
