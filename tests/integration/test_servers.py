"""Smoke tests of the real servers the harness starts."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.kafka_admin import create_topics_async, ready_partitions
from tests.harness import PostgresServer

pytestmark = pytest.mark.integration

# Short sessions make group joins take ~1 s on Tansu instead of session_timeout / 2.
FAST_GROUP = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 100}


@pytest.fixture(params=["apache_kafka", "embedded_kafka"])
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(request.param)


async def test_kafka_roundtrip_through_consumer_group(kafka_bootstrap: str, unique_id: str) -> None:
    topic = f"smoke-{unique_id}"
    await create_topics_async(kafka_bootstrap, [topic])
    sent = [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(3)]

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in sent:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"smoke-{unique_id}",
        auto_offset_reset="earliest",
        **FAST_GROUP,
    )
    await consumer.start()
    try:
        received = [await asyncio.wait_for(consumer.getone(), 30) for _ in sent]
    finally:
        await consumer.stop()

    assert [(m.key, m.value) for m in received] == sent
    assert [m.offset for m in received] == [0, 1, 2]
    assert {m.partition for m in received} == {0}


async def test_topics_are_made_with_the_partitions_asked_and_existing_ones_are_left_alone(
    kafka_bootstrap: str, unique_id: str
) -> None:
    old, new = f"fewer-{unique_id}", f"fresh-{unique_id}"
    assert await create_topics_async(kafka_bootstrap, [old], partitions=2) == {}

    fewer = await create_topics_async(kafka_bootstrap, [old, new], partitions=6)

    assert fewer == {old: 2}, "the existing topic is named, with its count"
    partitions, missing = await ready_partitions(kafka_bootstrap, [old, new])
    assert missing == []
    assert Counter(tp.topic for tp in partitions) == {old: 2, new: 6}


async def test_postgres_database_roundtrip(postgres: PostgresServer, unique_id: str) -> None:
    database = f"smoke_{unique_id}"
    postgres.create_database(database)
    engine = create_async_engine(postgres.url(database))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE items (id serial PRIMARY KEY, name text)"))
            await conn.execute(
                text("INSERT INTO items (name) VALUES (:name)"),
                [{"name": "alpha"}, {"name": "beta"}],
            )
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, name FROM items ORDER BY id"))).all()
            current = await conn.scalar(text("SELECT current_database()"))
    finally:
        await engine.dispose()

    assert [tuple(row) for row in rows] == [(1, "alpha"), (2, "beta")]
    assert current == database


MEMBER = """
import asyncio, os, sys
from aiokafka import AIOKafkaConsumer

async def main():
    consumer = AIOKafkaConsumer(sys.argv[2], bootstrap_servers=sys.argv[1], group_id=sys.argv[3],
                                session_timeout_ms=1000, heartbeat_interval_ms=3000)
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)
    print("assigned", flush=True)
    os._exit(0)  # gone without leaving the group, as a killed service would be

asyncio.run(main())
"""


async def test_embedded_broker_keeps_a_quiet_member_and_lets_in_the_next_after_one_dies(
    embedded_kafka: str, unique_id: str
) -> None:
    """`gantry up` sends heartbeats every 3 s with a 1 s session timeout (gantry/up.py): the
    embedded broker must neither drop a member for it nor keep a dead member's partitions."""
    topic, group = f"quiet-{unique_id}", f"quiet-{unique_id}"
    await create_topics_async(embedded_kafka, [topic], partitions=1)
    died = await asyncio.create_subprocess_exec(
        sys.executable, "-c", MEMBER, embedded_kafka, topic, group, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(died.communicate(), 60)
    assert out.decode().strip() == "assigned"

    revoked: list[set[TopicPartition]] = []

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, partitions: set[TopicPartition]) -> None:
            if partitions:
                revoked.append(set(partitions))

        async def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None:
            pass

    consumer = AIOKafkaConsumer(
        bootstrap_servers=embedded_kafka,
        group_id=group,
        auto_offset_reset="earliest",
        session_timeout_ms=1000,
        heartbeat_interval_ms=3000,
        fetch_max_wait_ms=100,
    )
    consumer.subscribe([topic], listener=Listener())
    producer = AIOKafkaProducer(bootstrap_servers=embedded_kafka, acks="all")
    await consumer.start()
    await producer.start()
    try:
        while not consumer.assignment():  # the dead member's partition comes to this one
            await asyncio.wait_for(consumer.getmany(timeout_ms=100), 30)
        received: list[bytes | None] = []
        for value in (b"first", b"after four quiet seconds"):
            await producer.send_and_wait(topic, value, partition=0)
            quiet_until = asyncio.get_running_loop().time() + 4  # the session timeout 4 times over
            while asyncio.get_running_loop().time() < quiet_until:
                batch = await consumer.getmany(timeout_ms=200)
                received += [record.value for records in batch.values() for record in records]
        revoked_while_in = list(revoked)  # before stop(), which gives its partitions back
    finally:
        await producer.stop()
        await consumer.stop()

    assert received == [b"first", b"after four quiet seconds"]
    assert revoked_while_in == [], "a member that heartbeats every 3 s stays in a group with a 1 s session"
