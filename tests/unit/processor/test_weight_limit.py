"""The body weight limit refuses crafted bodies and never an SDK client's."""

from __future__ import annotations

import json

import pytest
from ca4_processor.core.config import Settings
from ca4_schemas import record_weight

from tests.support.reports import h100_session


@pytest.mark.parametrize("gpus", [0, 1, 8])
def test_the_largest_sdk_batch_weighs_within_the_default_limit(gpus: int) -> None:
    """A batch filling the byte limit with SDK reports of any shape stays under the weight
    limit (SDK reports weigh 1.3-1.9 times their bytes), so no real client meets it."""
    settings = Settings(ENVIRONMENT="dev")
    session = h100_session(gpus)
    parts: list[str] = []
    size = len('{"reports": []}')
    while len(parts) < settings.MAX_BATCH_SIZE:
        part = json.dumps(session.next_report())
        if size + len(part) + 2 > settings.MAX_DECOMPRESSED_BYTES:
            break
        parts.append(part)
        size += len(part) + 2
    body = ('{"reports": [' + ", ".join(parts) + "]}").encode()
    assert record_weight(body) <= 2 * len(body) <= settings.MAX_BODY_WEIGHT, (
        len(parts),
        len(body),
        record_weight(body),
    )
