"""Two instances of a service starting at the same moment on one PostgreSQL database, as when a
user runs two of each: what each does at start (the gateway's built-in routes, release's
announcement of environments never announced) is done once, and neither instance fails to start."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence

import pytest
from sqlmodel import SQLModel, delete, select, update

from services.gateway import domain, handlers
from services.gateway.models import Route
from services.release import environments
from services.release.models import Environment, EnvironmentCreate
from shared.db import create_tables, make_engine, session_factory
from shared.events import Topic
from shared.outbox import OUTBOX_TABLES, OutboxMessage, UnitOfWork
from shared.settings import Settings
from tests.harness import PostgresServer
from tests.support import SECRET

pytestmark = pytest.mark.integration
ROUNDS = 8


async def two_instances(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory, service: str, tables: Sequence[type[SQLModel]]
) -> AsyncIterator[tuple[UnitOfWork, UnitOfWork]]:
    """Two engines (two processes' connection pools) on one fresh database, its tables made."""
    database = f"gantry_{os.urandom(4).hex()}"
    postgres.create_database(database)
    settings = Settings(home=tmp_path_factory.mktemp(service), secret=SECRET, database_url=postgres.url(database))
    engines = [make_engine(service, settings) for _ in range(2)]
    await create_tables(engines[0], service, [*OUTBOX_TABLES, *tables])
    first, second = (UnitOfWork(session_factory(engine)) for engine in engines)
    yield first, second
    for engine in engines:
        await engine.dispose()


async def announced(uow: UnitOfWork, topic: Topic) -> int:
    async with uow.sessions() as session:
        return len((await session.exec(select(OutboxMessage).where(OutboxMessage.topic == topic.value))).all())


@pytest.fixture
async def gateways(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory):
    async for pair in two_instances(postgres, tmp_path_factory, "gateway", [Route]):
        yield pair


@pytest.fixture
async def releases(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory):
    async for pair in two_instances(postgres, tmp_path_factory, "release", [Environment]):
        yield pair


async def test_two_gateways_starting_together_seed_the_builtin_routes_once(
    gateways: tuple[UnitOfWork, UnitOfWork],
) -> None:
    first, second = gateways
    for _ in range(ROUNDS):
        async with first.begin() as session:  # a database no gateway has started on yet
            await session.exec(delete(Route))
            await session.exec(delete(OutboxMessage))
        made = await asyncio.gather(*(handlers.seed_builtin_routes(uow=uow) for uow in (first, second)))
        assert sorted(made) == [0, len(domain.BUILTIN_ROUTES)], "one seeds, the other finds them seeded"
        assert len(await handlers.list_routes(uow=second)) == len(domain.BUILTIN_ROUTES)
        assert await announced(first, Topic.ROUTE_CHANGED) == len(domain.BUILTIN_ROUTES)


async def test_two_releases_starting_together_announce_each_environment_once(
    releases: tuple[UnitOfWork, UnitOfWork],
) -> None:
    first, second = releases
    for code in ("dev", "prod"):
        data = EnvironmentCreate(code=code, name=code.upper(), tier="test")
        await environments.create_environment(data, by="root", uow=first)
    for _ in range(ROUNDS):
        async with first.begin() as session:  # as an older Gantry left them: never announced
            await session.exec(update(Environment).values(announced_at=None))
            await session.exec(delete(OutboxMessage))
        made = await asyncio.gather(*(environments.announce_unannounced(uow=uow) for uow in (first, second)))
        assert sorted(made) == [[], ["dev", "prod"]], "one announces, the other finds them announced"
        assert await announced(first, Topic.ENVIRONMENT_CHANGED) == 2
