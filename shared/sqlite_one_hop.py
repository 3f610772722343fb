"""SQLite through aiosqlite with one thread hop per statement instead of four.

SQLAlchemy's aiosqlite adapter opens a cursor, executes, fetches and closes it as four round trips
to aiosqlite's worker thread, each a queue put, a thread wake-up and a ``call_soon_threadsafe``
back to the event loop. Under load that hand-over, not SQLite, was most of a consumer's database
time. Here a statement is one function run on that same thread (so SQLite is still used from one
thread per connection, and the event loop never blocks on it): it executes, reads every row and the
cursor's description, row count and last row id, and closes the cursor; the adapter then serves
them from memory, as SQLAlchemy's own adapter does after its fetch.

Given to ``create_async_engine`` as its ``module`` (the DBAPI), the stock ``sqlite+aiosqlite``
dialect is unchanged otherwise: transactions, isolation levels, pooling and errors are its own.

A batch's fixed statements cost a hop each too; where nothing waits for their answer they ride
with another (a consumer's batch made six besides its use cases' reads, two now; a relay cycle
four, two now; ``python -m bench.sqlite_hops``):
- ``BEGIN IMMEDIATE`` goes with the statement after it;
- writes made under ``sent_with_commit()`` (a batch's outbox and inbox rows, the relay's mark) go
  with the ``COMMIT``: a failure among them is the commit's (it raises, and the transaction is rolled
  back as for any failed commit);
- a ``COMMIT`` or ``ROLLBACK`` with no transaction open is not sent: the connection knows, from the
  last statement's answer, whether SQLite holds one (the pool rolls back every connection it is
  given back, after each commit too).
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

# description, rowcount, lastrowid, rows; and whether a transaction is open after it
Outcome = tuple[Any, int, int | None, list[Any] | None, bool]
Statement = tuple[str, Any, bool]  # operation, parameters, executemany
BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"
_WITH_COMMIT: ContextVar[bool] = ContextVar("gantry_sqlite_with_commit", default=False)


@contextmanager
def sent_with_commit() -> Iterator[None]:
    """The writes made inside go to SQLite with the transaction's ``COMMIT``, in one hop (on the
    one-hop adapter; elsewhere, such as on PostgreSQL, they run at once). For statements whose
    answer nobody reads: an ``INSERT`` or ``UPDATE`` without ``RETURNING``, its row count unknown."""
    token = _WITH_COMMIT.set(True)
    try:
        yield
    finally:
        _WITH_COMMIT.reset(token)


def _execute(connection: sqlite3.Connection, statement: Statement) -> sqlite3.Cursor:
    operation, parameters, many = statement
    cursor = connection.cursor()
    if many:
        cursor.executemany(operation, parameters)
    elif parameters is None:
        cursor.execute(operation)
    else:
        cursor.execute(operation, parameters)
    return cursor


def _sent_held(connection: aiosqlite.Connection, held: list[Statement]) -> sqlite3.Connection:
    """On aiosqlite's thread: the statements held back, in order; the sqlite3 connection."""
    conn: sqlite3.Connection = connection._conn
    for statement in held:
        _execute(conn, statement).close()
    return conn


def _run(connection: aiosqlite.Connection, before: list[Statement], statement: Statement) -> Outcome:
    """On aiosqlite's thread: the statements held back, then the whole statement, its rows read
    and its cursor closed."""
    conn = _sent_held(connection, before)
    cursor = _execute(conn, statement)
    try:
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows, conn.in_transaction
    finally:
        cursor.close()


def _end(connection: aiosqlite.Connection, before: list[Statement], commit: bool) -> bool:
    """On aiosqlite's thread: the statements held back, then ``COMMIT`` (or ``ROLLBACK``)."""
    conn = _sent_held(connection, before)
    if commit:
        conn.commit()
    else:
        conn.rollback()
    return conn.in_transaction


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose statement runs in one call on the connection's thread; its results are kept."""

    __slots__ = ("_description", "_rowcount", "_lastrowid", "_arraysize")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:  # no aiosqlite cursor
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return None  # nothing is open: the statement's cursor closed on the thread

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._statement(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        await self._statement(operation, seq_of_parameters, many=True)

    async def _statement(self, operation: Any, parameters: Any, *, many: bool) -> None:
        adapted: OneHopConnection = self._adapt_connection  # type: ignore[assignment]
        if operation == BEGIN_IMMEDIATE or _WITH_COMMIT.get():  # nobody reads its answer: held back
            adapted._held.append((operation, parameters, many))
            self._description, self._rowcount, self._lastrowid, self._rows = None, -1, None, collections.deque()
            return
        async with adapted._execute_mutex:
            before, adapted._held = adapted._held, []
            connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
            adapted._open = True  # until SQLite says otherwise (a failed statement leaves it unknown)
            outcome: Outcome = await connection._execute(  # type: ignore[no-untyped-call]
                _run, connection, before, (operation, parameters, many)
            )
        self._description, self._rowcount, self._lastrowid, rows, adapted._open = outcome
        self._rows = collections.deque(rows or ())

    def setinputsizes(self, *_inputsizes: Any) -> None:
        return None

    def nextset(self) -> None:
        raise NotImplementedError("SQLite has one result set per statement")


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """Holds back the statements nobody waits for until the next hop; sends no ``COMMIT`` or
    ``ROLLBACK`` when SQLite has no transaction open (``sqlite3`` would do nothing with them)."""

    __slots__ = ("_held", "_open")
    _cursor_cls = OneHopCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: Any) -> None:  # an aiosqlite.Connection
        super().__init__(dbapi, connection)
        self._held: list[Statement] = []
        self._open = True  # not known yet: the first COMMIT or ROLLBACK is sent

    def commit(self) -> None:
        self._finish(commit=True)

    def rollback(self) -> None:
        self._held.clear()  # never sent: nothing of them to undo
        self._finish(commit=False)

    def _finish(self, *, commit: bool) -> None:
        if len(self._held) == 1 and self._held[0][0] == BEGIN_IMMEDIATE:
            self._held.clear()  # a transaction that did nothing: not begun at all
        if not self._held and not self._open:
            return
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        if not connection._connection:
            return  # closed: as SQLAlchemy's adapter does
        before, self._held = self._held, []
        self._open = True
        try:
            self._open = await_(connection._execute(_end, connection, before, commit))  # type: ignore[no-untyped-call]
        except Exception as error:
            self._handle_exception(error)


class OneHopDbapi(AsyncAdapt_aiosqlite_dbapi):
    """aiosqlite as SQLAlchemy's aiosqlite dialect knows it, its connections' cursors one hop each."""

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        adapted = super().connect(*arg, **kw)
        return OneHopConnection(self, adapted._connection)


def one_hop_dbapi() -> OneHopDbapi | None:
    """The one-hop DBAPI, or None (SQLAlchemy's own adapter) where aiosqlite's connection no longer
    has the two internals it uses: its thread's call queue and its sqlite3 connection."""
    if not (hasattr(aiosqlite.Connection, "_execute") and hasattr(aiosqlite.Connection, "_conn")):
        return None
    return OneHopDbapi(aiosqlite, sqlite3)
