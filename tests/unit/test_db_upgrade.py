"""A newer Gantry starts on a database an older one made: the columns and indexes it added appear,
old rows get their defaults, and a column it cannot add is refused with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Index, event, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import Field, SQLModel, select

from shared.db import create_tables, inserted_together, session_factory


class Widget(SQLModel, table=True):
    __tablename__ = "upgrade_widgets"
    __table_args__ = (Index("ix_upgrade_widgets_name_weight", "name", "weight"),)  # added by the newer version
    id: int = Field(primary_key=True)
    name: str
    enabled: bool = True  # added by the newer version
    note: str | None = None  # added, nullable
    weight: int = 3  # added, with a default


class Gadget(SQLModel, table=True):
    __tablename__ = "upgrade_gadgets"
    id: int = Field(primary_key=True)
    owner: str  # added, required, no default: cannot be given to old rows


async def test_added_columns_appear_with_their_defaults(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE upgrade_widgets (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL)"))
        await conn.execute(text("INSERT INTO upgrade_widgets (id, name) VALUES (1, 'old')"))
    await create_tables(engine, "upgrade", [Widget])
    await create_tables(engine, "upgrade", [Widget])  # a second start finds nothing to add
    async with engine.begin() as conn:
        row = (await conn.execute(text("SELECT name, enabled, note, weight FROM upgrade_widgets"))).one()
        plan = (await conn.execute(text("EXPLAIN QUERY PLAN SELECT id FROM upgrade_widgets WHERE name = 'old'"))).all()
    await engine.dispose()
    assert tuple(row) == ("old", 1, None, 3)
    assert any("ix_upgrade_widgets_name_weight" in str(step) for step in plan), plan


async def test_a_required_column_without_default_is_refused_with_the_reason(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE upgrade_gadgets (id INTEGER PRIMARY KEY)"))
    with pytest.raises(RuntimeError, match="upgrade_gadgets in this database lacks the column owner"):
        await create_tables(engine, "upgrade", [Gadget])
    await engine.dispose()


class Gizmo(SQLModel, table=True):
    __tablename__ = "upgrade_gizmos"
    id: int | None = Field(default=None, primary_key=True)
    name: str


inserted_together(Gizmo)


async def test_rows_inserted_together_get_their_own_ids_in_one_statement_on_an_older_table(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    async with engine.begin() as conn:  # made before the sentinel column: it is added at start
        await conn.execute(text("CREATE TABLE upgrade_gizmos (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL)"))
        await conn.execute(text("INSERT INTO upgrade_gizmos (id, name) VALUES (1, 'old')"))
    await create_tables(engine, "upgrade", [Gizmo])
    inserts: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda _c, _k, sql, *_: inserts.append(sql))
    async with session_factory(engine)() as session:
        made = [Gizmo(name=f"new {n}") for n in range(5)]
        session.add_all(made)
        await session.commit()
        stored = {row.id: row.name for row in (await session.exec(select(Gizmo))).all()}
    await engine.dispose()
    assert len([sql for sql in inserts if sql.startswith("INSERT")]) == 1, "five rows, one INSERT"
    assert {gizmo.id: gizmo.name for gizmo in made} == {2: "new 0", 3: "new 1", 4: "new 2", 5: "new 3", 6: "new 4"}
    assert stored == {1: "old", **{gizmo.id: gizmo.name for gizmo in made}}, "each row has the id it was given"
