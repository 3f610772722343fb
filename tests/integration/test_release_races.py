"""Release's batches of versions and a request binding the service at the same moment, on both
real databases.

The guide: a service released to an environment gets the versions auto-release takes there. A
binding made while a batch of versions is being applied must not miss the version: either the
batch sees the binding, or the request sees the version and sends it at once."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from sqlalchemy import event

from services.release import handlers
from services.release.models import TABLES
from shared.bus import with_prefetch
from shared.consume import handle_batch
from shared.db import create_tables, make_engine, session_factory
from shared.events import Topic
from shared.outbox import OUTBOX_TABLES, UnitOfWork
from shared.settings import Settings
from tests.unit.test_release_handlers import PROJECT, add_environments, known_service, version_created
from tests.unit.test_shared import FakeDeadLetters

pytestmark = pytest.mark.integration
ROUNDS = 20


@pytest.fixture
async def uow(database_settings: Settings):
    engine = make_engine("release", database_settings)
    await create_tables(engine, "release", [*OUTBOX_TABLES, *TABLES])
    yield UnitOfWork(session_factory(engine))
    await engine.dispose()


async def test_a_binding_made_while_a_batch_of_versions_is_applied_gets_the_version(uow: UnitOfWork) -> None:
    await add_environments(uow, "staging", "prod")
    handler = with_prefetch(handlers.prefetch_versions, partial(handlers.on_version_created, uow=uow))
    missed = []
    for _ in range(ROUNDS):
        announced = await known_service(uow, "staging", auto=True)
        code = announced.data["service"]
        created = version_created(announced, "1.0.0")
        record = (created.data["service_id"].encode(), created.model_dump_json().encode())
        await asyncio.gather(
            handle_batch(Topic.VERSION_CREATED.value, [record], handler, FakeDeadLetters(), uow),
            _bind(uow, code, "prod"),
        )
        overview = await handlers.list_releases(PROJECT, code, uow=uow)
        latest = {
            target.environment: target.latest.version if target.latest else None for target in overview.environments
        }
        if latest != {"staging": "1.0.0", "prod": "1.0.0"}:
            missed.append(latest)
    assert missed == [], f"{len(missed)} of {ROUNDS} rounds left an environment without the version: {missed[:3]}"


async def _bind(uow: UnitOfWork, code: str, environment: str) -> None:
    """The request, retried as a client would on a conflict the database reports (SQLite: busy)."""
    for attempt in range(50):
        try:
            await handlers.release_service(PROJECT, code, environment, by="bob", correlation_id="req", uow=uow)
            return
        except Exception:
            if attempt == 49:
                raise
            await asyncio.sleep(0.01)


async def test_a_batch_of_versions_locks_each_service_once(uow: UnitOfWork) -> None:
    """On PostgreSQL a batch locks its services (a row write) before it reads ahead; its events do
    not write those rows again, one by one. Every version is released all the same."""
    await add_environments(uow, "qa")
    services = [await known_service(uow, "qa", auto=True) for _ in range(3)]
    created = [version_created(service, version) for version in ("1.0.0", "1.0.1") for service in services]
    records = [(c.data["service_id"].encode(), c.model_dump_json().encode()) for c in created]
    handler = with_prefetch(handlers.prefetch_versions, partial(handlers.on_version_created, uow=uow))
    engine = uow.sessions.kw["bind"].sync_engine
    writes: list[object] = []

    def listener(_connection: object, _cursor: object, sql: str, params: object, *_: object) -> None:
        if sql.startswith("UPDATE") and "revision" in sql:
            writes.append(params)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        await handle_batch(Topic.VERSION_CREATED.value, records, handler, FakeDeadLetters(), uow)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    for service in services:
        overview = await handlers.list_releases(PROJECT, service.data["service"], uow=uow)
        assert [(t.environment, t.latest and t.latest.version) for t in overview.environments] == [("qa", "1.0.1")]
    if engine.dialect.name == "postgresql":
        assert len(writes) == 1, f"the batch's services locked once, together: {writes}"
    else:
        assert writes == [], "the batch holds SQLite's write lock: no row is written to lock it"
