"""SQLite through the one-hop aiosqlite adapter (shared/sqlite_one_hop.py) answers as SQLAlchemy's
own adapter does: rows, row counts, last row ids, executemany, errors, rollbacks, ORM objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, select

from shared.db import make_engine, session_factory
from shared.settings import Settings
from shared.sqlite_one_hop import OneHopConnection
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
