"""Benchmark: SQLAlchemy's own aiosqlite adapter beside Gantry's one-hop adapter (shared/sqlite_one_hop.py).

    python -m bench.sqlite_hops [--transactions 3000]

Each transaction is what a consumer's smallest one looks like: BEGIN, an INSERT, a SELECT read
back, COMMIT, on a SQLite file with the services' pragmas. Prints, per adapter, the CPU time per
transaction of this process (the event loop's and aiosqlite's thread's) and the transactions per
second, one adapter right after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.measures import table
from shared.db import _sqlite_pragmas
from shared.sqlite_one_hop import one_hop_dbapi


def _engine(path: Path, one_hop: bool) -> AsyncEngine:
    options = {"module": one_hop_dbapi()} if one_hop else {}
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 30}, **options)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


async def measure(path: Path, one_hop: bool, transactions: int) -> tuple[float, float]:
    engine = _engine(path, one_hop)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)"))
    cpu, wall = time.process_time(), time.monotonic()
    for n in range(transactions):
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": str(n)})
            (await conn.execute(text("SELECT v FROM t WHERE id = last_insert_rowid()"))).scalar_one()
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    await engine.dispose()
    return 1000 * cpu / transactions, transactions / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=3000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, one_hop in (("SQLAlchemy's aiosqlite adapter", False), ("one hop per statement", True)):
            cpu_ms, rate = asyncio.run(measure(Path(folder) / f"{one_hop}.db", one_hop, args.transactions))
            rows.append((name, cpu_ms, rate))
    print(f"\nSQLite transactions (BEGIN, INSERT, SELECT, COMMIT), {args.transactions} each:")
    print(table(("adapter", "CPU ms per transaction", "transactions/s"), [(n, f"{c:.3f}", r) for n, c, r in rows]))


if __name__ == "__main__":
    main()
