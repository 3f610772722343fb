"""Kafka admin helpers shared by `gantry up` and the test harness.

They work against both the embedded Tansu broker and Apache Kafka. The plain functions
run their own event loop (``asyncio.run``), so call them outside a running loop.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


def create_topics(bootstrap: str, names: list[str], partitions: int = 1, replication: int = 1) -> None:
    """Create ``names`` with ``partitions`` partitions each; existing topics are left alone."""
    asyncio.run(create_topics_async(bootstrap, names, partitions, replication))


def metadata_ready(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when a metadata request to ``bootstrap`` answers with at least one broker."""
    return asyncio.run(_metadata_ready(bootstrap, timeout))


async def create_topics_async(
    bootstrap: str, names: list[str], partitions: int = 1, replication: int = 1
) -> None:
    """Coroutine form of :func:`create_topics`, for callers already inside an event loop."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=replication) for name in names]
        )
    finally:
        await admin.close()
    for name, code, *_ in response.topic_errors:
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            raise for_code(code)(f"creating topic {name!r} failed")


async def _metadata_ready(bootstrap: str, timeout: float) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
        return bool(cluster["brokers"])
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()
