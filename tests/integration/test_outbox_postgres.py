"""Two instances of one service on one PostgreSQL outbox publish each row once, in order."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from shared.db import create_tables, make_engine, session_factory
from shared.events import PipelineSucceeded, Topic, new_event
from shared.outbox import OUTBOX_TABLES, OutboxRelay, UnitOfWork, add_event
from shared.settings import Settings
from tests.support import SECRET

pytestmark = pytest.mark.integration


async def test_two_relays_share_the_outbox_without_publishing_twice(postgres, tmp_path) -> None:
    database = f"gantry_{os.urandom(4).hex()}"
    postgres.create_database(database)
    settings = Settings(home=tmp_path, secret=SECRET, database_url=postgres.url(database))
    engines = [make_engine("relaytest", settings) for _ in range(2)]  # two processes' pools
    await create_tables(engines[0], "relaytest", list(OUTBOX_TABLES))
    uow = UnitOfWork(session_factory(engines[0]))
    async with uow.begin() as session:
        for pipeline_id in range(40):
            data = PipelineSucceeded(
                service_id="s1", project="p", service="s", pipeline_id=pipeline_id, ref="main", sha="a"
            )
            add_event(
                session,
                Topic.PIPELINE_SUCCEEDED,
                new_event(Topic.PIPELINE_SUCCEEDED, data, source="test", subject="p/s"),
                key="s1",
            )
    sent: list[int] = []

    async def slow_broker(records):
        await asyncio.sleep(0.05)  # long enough for the other instance to try the same rows
        sent.extend(json.loads(value)["data"]["pipeline_id"] for _t, _k, value in records)
        return [None for _ in records]  # every record acknowledged

    relays = [
        OutboxRelay(session_factory(engine), slow_broker, batch=10, lock_name="gantry-outbox-relaytest")
        for engine in engines
    ]
    while sum(await asyncio.gather(*(relay.relay_once() for relay in relays))):
        pass
    for engine in engines:
        await engine.dispose()
    assert sent == list(range(40)), "each row once, in order"
