"""A newer Gantry starts on a database an older one made: the columns and indexes it added appear,
old rows get their defaults, and a column it cannot add is refused with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Index, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import Field, SQLModel

from shared.db import create_tables


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
