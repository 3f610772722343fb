"""A burst of events on real brokers and databases: taken in batches, each applied once, a poison
record in the middle set aside alone."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import event, func
from sqlmodel import col, select

from services.versioning.app import create_app as create_versioning
from services.versioning.models import KnownService
from shared.events import ServiceCreated, Topic, new_event
from shared.settings import Settings
from tests.support import TopicReader, eventually, running

pytestmark = pytest.mark.integration
BURST = 60


def _created(service_id: str) -> bytes:
    data = ServiceCreated(
        service_id=service_id,
        project="burst",
        service=service_id,
        name=service_id,
        group="g",
        type="go-http",
        repository_url=f"https://gitlab.example/g/{service_id}.git",
        repository_web_url=f"https://gitlab.example/g/{service_id}",
        repository_path=f"g/{service_id}",
        scm_project_id=service_id,
    )
    return (
        new_event(Topic.SERVICE_CREATED, data, source="test", subject=f"burst/{service_id}").model_dump_json().encode()
    )


async def test_a_burst_is_applied_in_batches_once_each_with_a_poison_record_set_aside(
    service_settings: Settings,
) -> None:
    run = uuid.uuid4().hex[:8]
    records = [(f"s{run}{n:03d}", _created(f"s{run}{n:03d}")) for n in range(BURST)]
    poison = f"{{not json {run}".encode()
    burst = [*records[:30], ("poison", poison), *records[30:], *records[:10]]  # the first ten again
    api = create_versioning(service_settings)
    async with (
        running(api),
        TopicReader(service_settings.kafka_bootstrap, "service.created.dlq") as dlq,
    ):
        runtime = api.state.runtime
        commits: list[int] = []
        event.listen(runtime.engine.sync_engine, "commit", lambda _conn: commits.append(1))
        producer = AIOKafkaProducer(bootstrap_servers=service_settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for _service, value in burst:  # one partition: one key for all, so their order is one order
                await producer.send(Topic.SERVICE_CREATED, value, key=b"burst")
            await producer.flush()
        finally:
            await producer.stop()

        async def known() -> int:
            async with runtime.uow.sessions() as session:
                query = select(func.count()).where(col(KnownService.project) == "burst")
                count = int((await session.exec(query)).one())
            return count if count == BURST else 0

        assert await eventually(known, timeout=60) == BURST
        dead = await dlq.wait_for(lambda _t, v: v.get("value") == poison.decode(), timeout=60)
        assert dead["reason"].startswith("undecodable")
        assert [v.get("value") for v in dlq.of_type("service.created.dlq") if run in str(v.get("value"))] == [
            poison.decode()
        ]
        assert len(commits) < BURST / 2, f"{len(commits)} transactions for {len(burst)} records"
