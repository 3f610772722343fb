"""Smoke tests of the real servers the harness starts."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
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
