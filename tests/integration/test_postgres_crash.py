"""Nothing acknowledged is lost when PostgreSQL crashes under load.

Catalog and release run in-process on a real broker and on a PostgreSQL with production's
durability settings. Clients keep creating services (a catalog row and its service.created outbox
row, one transaction); PostgreSQL is killed with ``pg_ctl stop -m immediate`` while requests are in
flight and started again on the same data directory. Every service answered 201 must still be in
catalog, on the topic, and known to release; a request that failed may or may not have happened,
but never by halves.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import pytest

from services.catalog.app import create_app as create_catalog
from services.release.app import create_app as create_release
from shared.settings import Settings
from tests.harness.postgres_server import LocalPostgres
from tests.support import ADMIN, SECRET, TopicReader, eventually, running

pytestmark = pytest.mark.integration

CLIENTS = 4
ACKNOWLEDGED_BEFORE_CRASH = 12
ACKNOWLEDGED_AFTER_RESTART = 8
WHOLE_TEST_SECONDS = 80


@dataclass
class Write:
    code: str
    status: int | None = None  # None: the request raised (connection lost mid-request)
    service_id: str | None = None
    error: str = ""


@dataclass
class Load:
    """Clients creating services back to back, each remembering what it was told."""

    catalog: httpx.AsyncClient
    project: str
    writes: list[Write] = field(default_factory=list)
    in_flight: int = 0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def acknowledged(self) -> list[Write]:
        return [write for write in self.writes if write.status == 201]

    def failed(self) -> list[Write]:
        return [write for write in self.writes if write.error]

    async def client(self) -> None:
        while not self.stopping.is_set():
            write = Write(code=f"svc-{len(self.writes):04d}")
            self.writes.append(write)
            self.in_flight += 1
            try:
                answer = await self.catalog.post(
                    f"/projects/{self.project}/services",
                    headers=ADMIN,
                    json={"code": write.code, "name": write.code, "group": "com.acme", "type": "go-http"},
                )
                write.status = answer.status_code
                if answer.status_code == 201:
                    write.service_id = answer.json()["id"]
                else:
                    write.error = f"{answer.status_code}: {answer.text[:300]}"
            except Exception as exc:  # the database went away under the request
                write.error = repr(exc)[:300]
            finally:
                self.in_flight -= 1
            if write.status != 201:
                await asyncio.sleep(0.05)  # pace the retries while the database is down


@pytest.fixture
def durable_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL of this test's own, with production's settings, since the test crashes it."""
    server = LocalPostgres(durable=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_acknowledged_writes_survive_a_postgres_crash(
    durable_postgres: LocalPostgres, embedded_kafka: str, tmp_path: Path
) -> None:
    database = f"gantry_{os.urandom(4).hex()}"
    durable_postgres.create_database(database)
    settings = Settings(
        home=tmp_path,
        kafka_bootstrap=embedded_kafka,
        secret=SECRET,
        kafka_group_prefix=f"t{uuid.uuid4().hex[:8]}",
        kafka_fetch_max_wait_ms=10,
        kafka_idempotence=False,
        kafka_session_timeout_ms=1000,
        database_url=durable_postgres.url(database),
    )
    project = f"p{uuid.uuid4().hex[:6]}"
    async with (
        asyncio.timeout(WHOLE_TEST_SECONDS),
        running(create_catalog(settings)) as catalog,
        running(create_release(settings)) as release,
        TopicReader(embedded_kafka, "service.created") as topic,
    ):
        created = await catalog.post(
            "/projects", headers=ADMIN, json={"code": project, "name": "Crash", "gitlab_group": "acme"}
        )
        assert created.status_code == 201, created.text
        load = Load(catalog, project)
        clients = [asyncio.create_task(load.client()) for _ in range(CLIENTS)]
        try:
            await crash_under_load(durable_postgres, load)
        finally:
            load.stopping.set()
            await asyncio.gather(*clients)

        rows = await catalog_rows(catalog, project)
        acknowledged, failed = load.acknowledged(), load.failed()
        lost = [w.code for w in acknowledged if rows.get(w.code) != w.service_id]
        assert not lost, f"acknowledged but gone after the restart: {lost}"
        assert set(rows) <= {w.code for w in load.writes}

        await eventually(lambda: outbox_drained(catalog), timeout=30)
        announced = await announced_services(topic, project)
        assert announced == set(rows.values()), "each row announced, and no announcement without its row"
        for code, service_id in rows.items():
            await eventually(partial(release_knows, release, project, code, service_id), timeout=30)
        for write in failed:
            if write.code not in rows:
                unknown = await release.get(f"/projects/{project}/services/{write.code}/releases", headers=ADMIN)
                assert unknown.status_code == 404, f"{write.code} failed, is in no catalog row, yet release knows it"

        committed_anyway = sum(1 for w in failed if w.code in rows)
        print(
            f"writes acknowledged: {len(acknowledged)}, failed: {len(failed)} ({committed_anyway} of them "
            f"committed before the answer was lost), catalog rows after the restart: {len(rows)}, "
            f"all announced and known to release"
        )


async def crash_under_load(postgres: LocalPostgres, load: Load) -> None:
    """Crash PostgreSQL once enough writes were acknowledged, with requests in flight; start it
    again once every client has seen the outage; return when the service writes again."""
    # Polled often, so the crash follows an acknowledgment closely: what a server that answers
    # before its WAL is on disk (synchronous_commit=off) loses is the last fraction of a second.
    await eventually(reached(lambda: len(load.acknowledged()), ACKNOWLEDGED_BEFORE_CRASH), timeout=30, interval=0.002)
    in_flight = load.in_flight
    await asyncio.to_thread(postgres.crash)
    assert in_flight > 0, "the crash must hit requests in flight"
    failed_before = len(load.failed())
    await eventually(reached(lambda: len(load.failed()), failed_before + CLIENTS), timeout=15)
    await asyncio.to_thread(postgres.start_again)
    wanted = len(load.acknowledged()) + ACKNOWLEDGED_AFTER_RESTART
    try:
        await eventually(reached(lambda: len(load.acknowledged()), wanted), timeout=30)
    except AssertionError:
        errors = [w.error for w in load.writes[-5:]]
        raise AssertionError(f"catalog did not write again after PostgreSQL came back: {errors}") from None


def reached(count: Callable[[], int], wanted: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return count() >= wanted

    return probe


async def catalog_rows(catalog: httpx.AsyncClient, project: str) -> dict[str, str]:
    answer = await catalog.get(f"/projects/{project}/services", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return {service["code"]: service["id"] for service in answer.json()}


async def outbox_drained(service: httpx.AsyncClient) -> bool:
    answer = await service.get("/readyz")
    return answer.status_code == 200 and answer.json()["outbox_pending"] == 0


async def announced_services(topic: TopicReader, project: str) -> set[str]:
    """The service ids announced for ``project``, read to the end of the topic."""
    consumer = topic.consumer
    partitions = list(consumer.assignment())
    ends = await consumer.end_offsets(partitions)
    deadline = time.monotonic() + 30
    while [p for p, end in ends.items() if await consumer.position(p) < end]:
        assert time.monotonic() < deadline, "could not read service.created to its end"
        batch = await consumer.getmany(timeout_ms=200)
        for tp, messages in batch.items():
            topic.records.extend((tp.topic, m.key, value) for m in messages if (value := _json(m.value)))
    return {
        v["data"]["service_id"] for v in topic.of_type("service.created") if v.get("data", {}).get("project") == project
    }


def _json(raw: bytes | None) -> dict | None:
    """A record's JSON value; None for another test's poison record."""
    try:
        value = json.loads(raw or b"")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def release_knows(release: httpx.AsyncClient, project: str, code: str, service_id: str) -> bool:
    answer = await release.get(f"/projects/{project}/services/{code}/releases", headers=ADMIN)
    return answer.status_code == 200 and answer.json()["service_id"] == service_id
