"""The gateway's event stream against a real (embedded) broker: stopped while the broker is away,
it leaves nothing of its Kafka client running."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gantry.embedded_broker import EmbeddedBroker
from services.gateway.events_stream import EventStream
from shared.events import ALL_TOPICS
from shared.kafka_admin import create_topics_async

pytestmark = pytest.mark.integration


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: it stops it."""
    with EmbeddedBroker() as started:
        yield started


def kafka_tasks() -> list[str]:
    """The aiokafka tasks still pending on this loop (a client's metadata task, its fetcher)."""
    return sorted(
        name
        for task in asyncio.all_tasks()
        if not task.done() and (name := task.get_coro().__qualname__).startswith(("AIOKafka", "Fetcher"))
    )


async def test_a_stream_stopped_while_the_broker_is_away_leaves_no_kafka_task_behind(broker: EmbeddedBroker) -> None:
    await create_topics_async(broker.bootstrap, list(ALL_TOPICS), 1)
    stream = EventStream(broker.bootstrap, 50)
    await stream.start()
    assert "AIOKafkaClient._md_synchronizer" in kafka_tasks()
    broker.stop()
    await asyncio.sleep(1)  # its fetcher meets the broker gone and retries
    await stream.stop()
    assert kafka_tasks() == []
