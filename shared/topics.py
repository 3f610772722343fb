"""Create Gantry's topics (and their dead-letter topics) if they are missing."""
from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.events import ALL_TOPICS


async def ensure_topics(bootstrap: str, partitions: int, names: Iterable[str] = ALL_TOPICS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if not missing:
            return
        try:
            await admin.create_topics(
                [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in missing]
            )
        except TopicAlreadyExistsError:  # another service created them first
            pass
    finally:
        await admin.close()
