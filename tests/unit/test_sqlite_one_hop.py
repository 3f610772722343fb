"""SQLite through the one-hop aiosqlite adapter (shared/sqlite_one_hop.py) answers as SQLAlchemy's
own adapter does: rows, row counts, last row ids, executemany, errors, rollbacks, ORM objects."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, select

from shared.db import make_engine, session_factory
from shared.settings import Settings
from shared.sqlite_one_hop import OneHopConnection, sent_with_commit
from tests.support import SECRET


class Gadget(SQLModel, table=True):
    __tablename__ = "one_hop_gadgets"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)


@pytest.fixture
async def engine(tmp_path: Path):
    engine = make_engine("gadgets", Settings(home=tmp_path, secret=SECRET))
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all, tables=[Gadget.__table__])
    yield engine
    await engine.dispose()


async def test_the_services_sqlite_engine_uses_the_one_hop_adapter(engine) -> None:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.dbapi_connection, OneHopConnection)


async def test_rows_counts_and_ids_come_back_as_from_a_cursor(engine) -> None:
    async with engine.begin() as conn:
        inserted = await conn.execute(text("INSERT INTO one_hop_gadgets (name) VALUES ('a')"))
        assert inserted.lastrowid == 1 and inserted.rowcount == 1
        many = await conn.execute(text("INSERT INTO one_hop_gadgets (name) VALUES (:n)"), [{"n": "b"}, {"n": "c"}])
        assert many.rowcount == 2, "executemany counts every row"
        updated = await conn.execute(text("UPDATE one_hop_gadgets SET name = name || '!' WHERE id > 1"))
        assert updated.rowcount == 2
        rows = (await conn.execute(text("SELECT id, name FROM one_hop_gadgets ORDER BY id"))).all()
        assert [tuple(row) for row in rows] == [(1, "a"), (2, "b!"), (3, "c!")]
        result = await conn.execute(text("SELECT name FROM one_hop_gadgets ORDER BY id"))
        assert (
            list(result.keys()) == ["name"]
            and result.fetchone() == ("a",)
            and result.fetchmany(5) == [("b!",), ("c!",)]
        )
        assert (await conn.execute(text("SELECT name FROM one_hop_gadgets WHERE id = 9"))).first() is None


async def test_a_refused_statement_raises_the_databases_error_and_rolls_back(engine) -> None:
    async def twice() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO one_hop_gadgets (name) VALUES ('x')"))
            await conn.execute(text("INSERT INTO one_hop_gadgets (name) VALUES ('x')"))

    with pytest.raises(IntegrityError, match="UNIQUE"):
        await twice()
    async with engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM one_hop_gadgets"))).scalar_one()
    assert count == 0, "the transaction's first insert went with it"


async def test_orm_sessions_write_and_read_objects(engine) -> None:
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        session.add_all([Gadget(name="lamp"), Gadget(name="kettle")])
    async with sessions() as session:
        found = (await session.exec(select(Gadget).order_by(Gadget.name))).all()
        assert [(g.id is not None, g.name) for g in found] == [(True, "kettle"), (True, "lamp")]
        lamp = await session.get(Gadget, found[1].id)
        assert lamp is not None and lamp.name == "lamp"


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each call the adapter makes on aiosqlite's thread, by what it ran."""
    made: list[str] = []
    execute = aiosqlite.Connection._execute

    async def counted(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        made.append(getattr(fn, "__name__", repr(fn)))
        return await execute(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return made


async def _count(engine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM one_hop_gadgets"))).scalar_one())


async def test_a_batchs_fixed_statements_go_with_the_ones_after_them(engine, hops: list[str]) -> None:
    """BEGIN IMMEDIATE goes with the first read; the writes sent with the commit go with it; the
    pool's rollback of a connection with no transaction open is not sent: two hops, not six."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))  # the pool's first connection: its pragmas, its first rollback
    hops.clear()
    async with engine.begin() as conn:
        await conn.execute(text("BEGIN IMMEDIATE"))
        assert (await conn.execute(text("SELECT count(*) FROM one_hop_gadgets"))).scalar_one() == 0
        with sent_with_commit():
            await conn.execute(text("INSERT INTO one_hop_gadgets (name) VALUES (:n)"), [{"n": "a"}, {"n": "b"}])
            await conn.execute(text("UPDATE one_hop_gadgets SET name = name || '!'"))
    assert hops == ["_run", "_end"]
    hops.clear()
    assert await _count(engine) == 2, "the held writes were committed"
    assert hops == ["_run"], "a read outside a transaction: no COMMIT or ROLLBACK sent"


async def test_a_held_write_that_fails_fails_the_commit_and_nothing_is_written(engine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO one_hop_gadgets (name) VALUES ('x')"))

    async def clashing_at_the_commit() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("BEGIN IMMEDIATE"))
            await conn.execute(text("INSERT INTO one_hop_gadgets (name) VALUES ('y')"))
            with sent_with_commit():
                await conn.execute(text("INSERT INTO one_hop_gadgets (name) VALUES ('x')"))

    with pytest.raises(IntegrityError, match="UNIQUE"):
        await clashing_at_the_commit()
    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT name FROM one_hop_gadgets"))).scalars().all()
    assert names == ["x"], "the transaction's own insert was rolled back with the failed commit"
    async with engine.begin() as conn:  # the connection is usable again, a new transaction on it
        await conn.execute(text("INSERT INTO one_hop_gadgets (name) VALUES ('z')"))
    assert await _count(engine) == 2


async def test_a_transaction_that_only_took_the_lock_sends_nothing_and_holds_no_lock(engine, hops) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    hops.clear()
    async with engine.begin() as conn:
        await conn.execute(text("BEGIN IMMEDIATE"))
    assert hops == []
    other = make_engine("gadgets", Settings(home=Path(str(engine.url.database)).parent, secret=SECRET))
    try:
        async with other.begin() as conn:  # would wait 30 s for a lock left behind
            await conn.execute(text("BEGIN IMMEDIATE"))
            await conn.execute(text("INSERT INTO one_hop_gadgets (name) VALUES ('w')"))
    finally:
        await other.dispose()
    assert await _count(engine) == 1
