"""Benchmark: what one read costs SQLAlchemy, by how its statement is made.

    python -m bench.statements [--calls 2000]

On a SQLite file with deploy's tables and a few hundred deployments, the same read (is there a
manual deployment since the last removal? ``services.deploy.lookups.has_manual_deployment``) is run
``--calls`` times in one session, its statements made five ways: two statements built at each call
(``select()`` and ``where()`` on the ORM's columns, as Gantry read it before), one statement with
an alias built at each call, one built once with its values bound at each call (``bindparam``:
what the hot paths do now), the same through the session's connection (Core, no ORM result), and
as SQL text. Beside them: a plain select of rows on three columns built at each call and built
once, a look-up by primary key (``session.get`` on an empty session), and a batch's read ahead of
the rows its events name (``shared.bus.read_ahead``: two columns, each ``IN`` the values of the
batch's events, here one; a row or none) built at each call, as it was, and built once with the
values bound as lists, as it is. Prints the CPU time per call of this process (the event loop's
and aiosqlite's thread's) and the wall time, each way right after the other, twice.

Then what making one row object costs: a deployment (27 fields; three default factories: ``list``,
``dict`` and ``utcnow``) made ``--calls`` times with its factories as SQLModel gives them, then
signed beforehand (``shared.db.quick_default_factories``), then made the quick way
(``shared.db.quick_table_rows``, as each service does at start: no ``setattr`` per field).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import bindparam, func, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bench.measures import table
from services.deploy import lookups
from services.deploy.models import DEPLOY_TABLES, Deployment, KnownService
from shared.db import create_tables, make_engine, quick_default_factories, quick_table_rows
from shared.events import utcnow
from shared.settings import Settings

Read = Callable[[AsyncSession, str, str], Awaitable[object]]
BOUND = lookups.MANUAL_SINCE_REMOVAL  # deploy's own statement, built once
SQL = text(
    "SELECT d.id FROM deployments d WHERE d.service_id = :service_id AND d.environment = :environment"
    " AND d.\"trigger\" = 'manual' AND d.action = 'deploy' AND NOT EXISTS (SELECT 1 FROM deployments r"
    " WHERE r.service_id = :service_id AND r.environment = :environment AND r.action = 'undeploy'"
    " AND r.state = 'removed' AND r.created_at >= d.created_at) LIMIT 1"
)


async def built_each_call(session: AsyncSession, service_id: str, environment: str) -> object:
    removal = aliased(Deployment)
    query = (
        select(Deployment.id)
        .where(Deployment.service_id == service_id, Deployment.environment == environment)
        .where(Deployment.trigger == "manual", Deployment.action == "deploy")
        .where(
            ~select(removal.id)
            .where(removal.service_id == service_id, removal.environment == environment)
            .where(removal.action == "undeploy", removal.state == "removed")
            .where(col(removal.created_at) >= Deployment.created_at)
            .exists()
        )
        .limit(1)
    )
    return (await session.exec(query)).first()


async def two_built_each_call(session: AsyncSession, service_id: str, environment: str) -> object:
    """As Gantry read it before: the last removal's time, then a manual deployment after it."""
    query = (
        select(Deployment.id)
        .where(Deployment.service_id == service_id, Deployment.environment == environment)
        .where(Deployment.trigger == "manual", Deployment.action == "deploy")
    )
    removed_at = await session.exec(
        select(func.max(Deployment.created_at))
        .where(Deployment.service_id == service_id, Deployment.environment == environment)
        .where(Deployment.action == "undeploy", Deployment.state == "removed")
    )
    since = removed_at.first()
    if since is not None:
        query = query.where(Deployment.created_at > since)
    return (await session.exec(query.limit(1))).first()


async def simple_built_each_call(session: AsyncSession, service_id: str, environment: str) -> object:
    query = select(Deployment).where(
        Deployment.service_id == service_id, Deployment.environment == environment, Deployment.version == "1.0.0"
    )
    return (await session.exec(query)).first()


SIMPLE = select(Deployment).where(
    Deployment.service_id == bindparam("service_id"),
    Deployment.environment == bindparam("environment"),
    Deployment.version == bindparam("version"),
)


async def simple_built_once(session: AsyncSession, service_id: str, environment: str) -> object:
    values = {"service_id": service_id, "environment": environment, "version": "1.0.0"}
    return (await session.exec(SIMPLE, params=values)).first()


async def built_once(session: AsyncSession, service_id: str, environment: str) -> object:
    return (await session.exec(BOUND, params={"service_id": service_id, "environment": environment})).first()


async def built_once_core(session: AsyncSession, service_id: str, environment: str) -> object:
    connection = await session.connection()
    return (await connection.execute(BOUND, {"service_id": service_id, "environment": environment})).first()


async def sql_text(session: AsyncSession, service_id: str, environment: str) -> object:
    connection = await session.connection()
    return (await connection.execute(SQL, {"service_id": service_id, "environment": environment})).first()


async def by_primary_key(session: AsyncSession, service_id: str, _environment: str) -> object:
    session.expunge_all()  # not found in the session: read
    return await session.get(KnownService, service_id)


async def ahead_built_each_call(session: AsyncSession, service_id: str, _environment: str) -> object:
    query = select(Deployment).where(col(Deployment.service_id).in_({service_id}), col(Deployment.id).in_({"d10"}))
    return (await session.exec(query)).all()


AHEAD = select(Deployment).where(
    col(Deployment.service_id).in_(bindparam("ahead_service_id", expanding=True)),
    col(Deployment.id).in_(bindparam("ahead_id", expanding=True)),
)


async def ahead_built_once(session: AsyncSession, service_id: str, _environment: str) -> object:
    values = {"ahead_service_id": [service_id], "ahead_id": ["d10"]}
    return (await session.exec(AHEAD, params=values)).all()


WAYS: tuple[tuple[str, Read], ...] = (
    ("two statements, built at each call (ORM: as before)", two_built_each_call),
    ("one statement with an alias, built at each call (ORM)", built_each_call),
    ("one statement, built once, values bound (ORM)", built_once),
    ("one statement, built once, values bound (Core)", built_once_core),
    ("one statement as SQL text", sql_text),
    ("a plain select of rows, built at each call (ORM)", simple_built_each_call),
    ("a plain select of rows, built once, values bound (ORM)", simple_built_once),
    ("session.get by primary key, not in the session", by_primary_key),
    ("a batch's read ahead of one event, built at each call (as before)", ahead_built_each_call),
    ("a batch's read ahead of one event, built once, lists bound (shared.bus.read_ahead)", ahead_built_once),
)


async def _fill(sessions: async_sessionmaker[AsyncSession]) -> None:
    now = utcnow()
    async with sessions() as session:
        for n in range(400):
            service = f"s{n % 10}"
            if n < 10:
                session.add(KnownService(service_id=service, project="p", service=service, name=service))
            session.add(
                Deployment(
                    id=f"d{n}",
                    service_id=service,
                    project="p",
                    service=service,
                    namespace="p-dev",
                    environment="dev",
                    version=f"1.{n}.0",
                    image="registry.local/p/s:1",
                    replicas=1,
                    strategy="rolling",
                    track="stable",
                    action="undeploy" if n % 7 == 0 else "deploy",
                    state="removed" if n % 7 == 0 else "rendered",
                    trigger="manual" if n % 3 == 0 else "auto",
                    by="bench",
                    correlation_id=f"c{n}",
                    created_at=now + timedelta(seconds=n),
                )
            )
            if n % 10 == 9:
                await session.commit()
        await session.commit()


async def measure(folder: Path, calls: int) -> list[tuple[str, float, float]]:
    engine = make_engine("deploy", Settings(home=folder))
    await create_tables(engine, "deploy", DEPLOY_TABLES)
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    await _fill(sessions)
    rows = []
    for _round in range(2):
        for name, read in WAYS:
            async with sessions() as session:
                await read(session, "s0", "dev")  # compiled and cached before the clock starts
                cpu, wall = time.process_time(), time.monotonic()
                for n in range(calls):
                    await read(session, f"s{n % 10}", "dev")
                cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            rows.append((name, 1e6 * cpu / calls, 1e6 * wall / calls))
    await engine.dispose()
    return rows


def making_rows(calls: int) -> list[tuple[str, float]]:
    """CPU µs to make one deployment object, its default factories unsigned, then signed, then the quick way."""
    rows = []
    ways = {
        "default factories as SQLModel gives them": lambda: None,
        "default factories signed beforehand": lambda: quick_default_factories([Deployment]),
        "made the quick way": lambda: quick_table_rows([Deployment]),
    }
    for name, prepare in ways.items():
        prepare()
        cpu = time.process_time()
        for n in range(calls):
            Deployment(
                id=f"d{n}",
                service_id="s",
                project="p",
                service="s",
                namespace="p-dev",
                environment="dev",
                version="1.0.0",
                image="registry.local/p/s:1",
                by="bench",
                correlation_id="c",
            )
        rows.append((f"a deployment's row object, {name}", 1e6 * (time.process_time() - cpu) / calls))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = asyncio.run(measure(Path(folder), args.calls))
    print(f"\none read, {args.calls} calls each way, two rounds:")
    print(
        table(("statement", "CPU µs per call", "wall µs per call"), [(n, f"{c:.0f}", f"{w:.0f}") for n, c, w in rows])
    )
    made = making_rows(args.calls)
    print(f"\none row object, {args.calls} made each way:")
    print(table(("object", "CPU µs per object"), [(n, f"{c:.0f}") for n, c in made]))


if __name__ == "__main__":
    main()
