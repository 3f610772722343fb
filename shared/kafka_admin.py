"""Kafka admin helpers shared by `gantry up` and the test harness.

They work against both the embedded Tansu broker and Apache Kafka. The plain functions
run their own event loop (``asyncio.run``), so call them outside a running loop.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from shared.logging import get_logger

log = get_logger(__name__)

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


def create_topics(bootstrap: str, names: list[str], partitions: int = 1, replication: int = 1) -> dict[str, int]:
    """Create ``names`` with ``partitions`` partitions each; existing topics are left alone (those
    with fewer partitions are returned, with their count, and warned of)."""
    return asyncio.run(create_topics_async(bootstrap, names, partitions, replication))


def metadata_ready(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when a metadata request to ``bootstrap`` answers with at least one broker."""
    return asyncio.run(_metadata_ready(bootstrap, timeout))


async def create_topics_async(
    bootstrap: str, names: list[str], partitions: int = 1, replication: int = 1
) -> dict[str, int]:
    """Coroutine form of :func:`create_topics`, for callers already inside an event loop. Returns
    the topics that existed with fewer partitions than ``partitions``, with their count, and warns
    of them: adding partitions moves keys to other partitions, which only a person can time."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=replication) for name in names]
        )
        existed = [name for name, code, *_ in response.topic_errors if code == _TOPIC_ALREADY_EXISTS]
        fewer = await _fewer_partitions(admin, existed, partitions) if existed else {}
    finally:
        await admin.close()
    for name, code, *_ in response.topic_errors:
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            raise for_code(code)(f"creating topic {name!r} failed")
    if fewer:
        log.warning(
            "topics have fewer partitions than GANTRY_KAFKA_PARTITIONS and are left so: no more instances of a "
            "service share its work than a topic has partitions; add partitions with Kafka's tools while no events "
            "are in flight",
            wanted=partitions,
            topics=fewer,
        )
    return fewer


async def _fewer_partitions(admin: AIOKafkaAdminClient, names: list[str], partitions: int) -> dict[str, int]:
    described = await admin.describe_topics(names)
    counts = {entry["topic"]: len(entry["partitions"]) for entry in described if entry["error_code"] == 0}
    return {name: count for name, count in sorted(counts.items()) if count < partitions}


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


async def ready_partitions(bootstrap: str, wanted: list[str]) -> tuple[list[TopicPartition], list[str]]:
    """The partitions of those of ``wanted`` that are ready, and the names of the others."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        return await _ready_partitions(admin, wanted)
    finally:
        await admin.close()


async def _ready_partitions(admin: AIOKafkaAdminClient, wanted: list[str]) -> tuple[list[TopicPartition], list[str]]:
    existing = set(await admin.list_topics())
    # Only existing topics are described: a broker may create the ones it is asked about.
    present = [topic for topic in wanted if topic in existing]
    described = await admin.describe_topics(present) if present else []
    ready = {
        entry["topic"]: sorted(p["partition"] for p in entry["partitions"])
        for entry in described
        if entry["error_code"] == 0
        and entry["partitions"]
        and all(p.get("error_code", 0) == 0 for p in entry["partitions"])
    }
    partitions = [TopicPartition(t, p) for t in wanted if t in ready for p in ready[t]]
    return partitions, [topic for topic in wanted if topic not in ready]


def consumer_lag(bootstrap: str, groups: dict[str, list[str]]) -> int:
    """Records on ``groups``' topics ({group: topics}) that the group has not committed yet."""
    return asyncio.run(_consumer_lag(bootstrap, groups))


async def _consumer_lag(bootstrap: str, groups: dict[str, list[str]]) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        await admin.start()
        await reader.start()
        lag = 0
        for group, topics in groups.items():
            partitions, _missing = await _ready_partitions(admin, topics)  # the client already open
            if not partitions:
                continue
            ends = await reader.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            for tp in partitions:
                done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
                lag += max(0, ends[tp] - done)
        return lag
    finally:
        await reader.stop()
        await admin.close()
