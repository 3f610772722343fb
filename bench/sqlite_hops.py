"""Benchmark: SQLAlchemy's own aiosqlite adapter beside Gantry's one-hop adapter (shared/sqlite_one_hop.py).

    python -m bench.sqlite_hops [--transactions 3000] [--events 5]

Two shapes of transaction, on a SQLite file with the services' pragmas:
- the smallest: an INSERT, a SELECT read back, COMMIT;
- a consumer's batch of ``--events`` events with nothing else to do: BEGIN IMMEDIATE, the inbox
  read, the outbox rows inserted, the inbox ids inserted, COMMIT (``shared.outbox.UnitOfWork.batch``),
  its two inserts sent at once or held back and sent with the COMMIT (``sent_with_commit``).

Prints, per way, the CPU time per transaction of this process (the event loop's and aiosqlite's
thread's), the transactions per second and the calls made on aiosqlite's thread per transaction,
one way right after the other. The last way of each shape makes the one-hop adapter's calls on the
event loop's own thread instead (what a statement costs without any thread hop; Gantry does not
run SQLite that way: ADR 17).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import bindparam, event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bench.measures import table
from shared.db import _sqlite_pragmas
from shared.sqlite_one_hop import one_hop_dbapi, sent_with_commit

Transaction = Callable[[AsyncEngine, int], Awaitable[None]]
_INBOX_READ = text("SELECT event_id FROM inbox WHERE event_id IN :ids").bindparams(bindparam("ids", expanding=True))


def _engine(path: Path, one_hop: bool) -> AsyncEngine:
    options = {"module": one_hop_dbapi()} if one_hop else {}
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 30}, **options)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


async def smallest(engine: AsyncEngine, n: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": str(n)})
        (await conn.execute(text("SELECT v FROM t WHERE id = last_insert_rowid()"))).scalar_one()


def batch_of(events: int, held: Callable[[], AbstractContextManager[Any]]) -> Transaction:
    async def batch(engine: AsyncEngine, _n: int) -> None:
        ids = [str(uuid.uuid4()) for _ in range(events)]
        async with engine.begin() as conn:
            await conn.execute(text("BEGIN IMMEDIATE"))
            await conn.execute(_INBOX_READ, {"ids": ids})
            with held():
                await _insert(conn, "INSERT INTO outbox (event_id, payload) VALUES (:id, :p)", ids, "{}")
                await _insert(conn, "INSERT INTO inbox (event_id, topic) VALUES (:id, :p)", ids, "t")

    return batch


async def _insert(conn: AsyncConnection, statement: str, ids: list[str], value: str) -> None:
    await conn.execute(text(statement), [{"id": event_id, "p": value} for event_id in ids])


async def measure(
    path: Path, one_hop: bool, transaction: Transaction, transactions: int, *, on_loop: bool = False
) -> tuple[float, float, float]:
    engine = _engine(path, one_hop)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)"))
        await conn.execute(text("CREATE TABLE IF NOT EXISTS inbox (event_id TEXT PRIMARY KEY, topic TEXT)"))
        await conn.execute(
            text("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, event_id TEXT UNIQUE, payload TEXT)")
        )
    await engine.dispose()  # on_loop: the connections used below are opened on the loop's thread
    calls = 0
    execute = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if on_loop:
            return fn(*args, **kwargs)
        return await execute(self, fn, *args, **kwargs)

    aiosqlite.Connection._execute = counted  # type: ignore[method-assign]
    try:
        cpu, wall = time.process_time(), time.monotonic()
        for n in range(transactions):
            await transaction(engine, n)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        aiosqlite.Connection._execute = execute  # type: ignore[method-assign]
    await engine.dispose()
    return 1000 * cpu / transactions, transactions / wall, calls / transactions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=3000)
    parser.add_argument("--events", type=int, default=5, help="events in a consumer's batch")
    args = parser.parse_args()
    batch = f"a batch of {args.events}"
    ways: list[tuple[str, str, bool, Transaction, bool]] = [
        ("INSERT, SELECT, COMMIT", "SQLAlchemy's aiosqlite adapter", False, smallest, False),
        ("INSERT, SELECT, COMMIT", "one hop per statement", True, smallest, False),
        ("INSERT, SELECT, COMMIT", "one hop's calls on the loop's thread", True, smallest, True),
        (batch, "SQLAlchemy's aiosqlite adapter", False, batch_of(args.events, nullcontext), False),
        (batch, "one hop, inserts sent at once", True, batch_of(args.events, nullcontext), False),
        (batch, "one hop, inserts sent with the COMMIT", True, batch_of(args.events, sent_with_commit), False),
        (batch, "the same on the loop's thread", True, batch_of(args.events, sent_with_commit), True),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for number, (shape, name, one_hop, transaction, on_loop) in enumerate(ways):
            path = Path(folder) / f"{number}.db"
            cpu_ms, rate, calls = asyncio.run(measure(path, one_hop, transaction, args.transactions, on_loop=on_loop))
            hops = f"0 ({calls:.1f} calls on the loop)" if on_loop else f"{calls:.1f}"
            rows.append((shape, name, f"{cpu_ms:.3f}", rate, hops))
    print(f"\nSQLite transactions, {args.transactions} each:")
    columns = ("transaction", "adapter", "CPU ms per transaction", "transactions/s", "calls on aiosqlite's thread")
    print(table(columns, rows))


if __name__ == "__main__":
    main()
