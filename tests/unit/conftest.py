"""Unit-tier fixtures: a real SQLite database per test, built the way a service builds its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import SQLModel, select

from shared.db import create_tables, make_engine, session_factory
from shared.outbox import OUTBOX_TABLES, OutboxMessage, UnitOfWork
from shared.settings import Settings
from tests.kustomize_builds import BASE, BUILDERS, OVERLAY, Doc, kustomize_program
from tests.support import SECRET

UowFactory = Callable[[str, Sequence[type[SQLModel]]], "AsyncIterator[UnitOfWork]"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, secret=SECRET)


@pytest.fixture
async def make_uow(settings: Settings):
    engines = []

    async def build(service: str, tables: Sequence[type[SQLModel]], *, home: Path | None = None) -> UnitOfWork:
        """The service's database (another one when ``home`` names another folder), its tables made."""
        engine = make_engine(service, settings if home is None else settings.model_copy(update={"home": home}))
        engines.append(engine)
        await create_tables(engine, service, [*OUTBOX_TABLES, *tables])
        return UnitOfWork(session_factory(engine), source=f"gantry/{service}")

    yield build
    for engine in engines:
        await engine.dispose()


async def outbox(uow: UnitOfWork, topic: str | None = None) -> list[OutboxMessage]:
    async with uow.sessions() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.id)  # type: ignore[arg-type]
        rows = list((await session.exec(query)).all())
    return [row for row in rows if topic is None or row.topic == topic]


@contextmanager
def statements_of(uow: UnitOfWork) -> Iterator[list[str]]:
    """Every statement sent to ``uow``'s database while the block runs (one per executemany)."""
    engine = uow.sessions.kw["bind"].sync_engine
    sent: list[str] = []

    def on_execute(_conn, _cursor, statement, _parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


@contextmanager
def reads_of(uow: UnitOfWork, table: str) -> Iterator[list[tuple[str, Any]]]:
    """The SELECT statements from ``table`` (and their parameters) run while the block runs."""
    engine = uow.sessions.kw["bind"].sync_engine
    reads: list[tuple[str, Any]] = []

    def on_execute(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("SELECT") and f"FROM {table}" in statement:
            reads.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield reads
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


async def query_plan(uow: UnitOfWork, statement: str, parameters: Any) -> str:
    """SQLite's plan for ``statement``, its steps joined by " / "."""
    async with uow.sessions() as session:
        connection = await session.connection()
        plan = (await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)).all()
    return " / ".join(str(step[-1]) for step in plan)


# --- deploy/'s kustomize builds (tests/kustomize_builds.py), each check run on every build --------


@pytest.fixture(params=list(BUILDERS), scope="module")
def build(request: pytest.FixtureRequest) -> Callable[[Path], list[Doc]]:
    if request.param == "kustomize" and kustomize_program() is None:
        pytest.skip("neither kustomize nor kubectl is installed: checked with the pure-Python build only")
    return BUILDERS[request.param]


@pytest.fixture(scope="module")
def base(build: Callable[[Path], list[Doc]]) -> list[Doc]:
    return build(BASE)


@pytest.fixture(scope="module")
def overlay(build: Callable[[Path], list[Doc]]) -> list[Doc]:
    return build(OVERLAY)
