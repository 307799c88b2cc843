"""``make bench``'s parts leave nothing behind in the dev stack they measure."""

from __future__ import annotations

import pytest

from tests.support.services import Endpoints

pytestmark = [pytest.mark.kafka]


async def _topics(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_the_event_size_part_leaves_no_topic_behind(services: Endpoints) -> None:
    """The event-size part made a topic of its own and never deleted it: each ``make bench``,
    and so each run of the test above, left one more in the dev stack's Kafka."""
    from bench import event_size

    # Its own prefix only: other tests share the dev stack's Kafka and make topics meanwhile.
    before = await _topics(services.kafka_bootstrap_servers)
    result = await event_size.measure()
    assert result["topic_records"] == 100
    after = await _topics(services.kafka_bootstrap_servers)
    assert {t for t in after - before if t.startswith("ca4-event-size-")} == set()
