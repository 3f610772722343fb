"""One transaction for a batch of events: what a consumer's use cases share while it applies them.

A consumer applies what one fetch returned in ONE database transaction (``UnitOfWork.batch``).
The use cases keep their shape: inside a batch, ``UnitOfWork.begin()`` opens a savepoint of the
batch's transaction instead of a transaction of its own, so an event that fails rolls back its
own changes only, exactly as its own transaction would have; and ``claim_inbox`` answers from the
ids the inbox already had (read once for the whole batch) and the ids claimed so far, the claims
being written in one insert when the batch commits.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, TypeVar

from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession


class BatchConflict(Exception):
    """Another consumer applied some of the batch's events meanwhile: the batch is tried again."""


class SpoiledBatch(Exception):
    """A use case failed in a batch applied without savepoints: it is applied again with them."""


@dataclass
class Batch:
    """The transaction a consumer applies one batch of events in."""

    owner: object  # the UnitOfWork that opened it: only its use cases join
    session: AsyncSession
    applied: frozenset[str]  # ids the inbox had when the batch began
    claims: list[tuple[str, str]] = field(default_factory=list)  # (event id, topic) claimed, in order
    outgoing: list[dict[str, object]] = field(default_factory=list)  # outbox rows, inserted at the end
    task: asyncio.Task[object] | None = field(default_factory=asyncio.current_task)
    open: bool = True
    careful: bool = True  # each use case in a savepoint; else in the batch's transaction itself
    failures: int = 0  # use cases that failed inside the batch (not careful: the batch is spoiled)
    kept: Sequence[object] = ()  # rows read ahead for the batch's use cases (``bus.with_prefetch``)
    absent: set[object] = field(default_factory=set)  # identity keys read ahead and not found
    indexes: dict[tuple[type, tuple[str, ...]], Index] = field(default_factory=dict)  # ``index_rows``
    memo: dict[object, object] = field(default_factory=dict)  # ``batch_memo``: forgotten when a use case fails
    folds: Mapping[str, Callable[[Any], Awaitable[object]]] = field(default_factory=dict)  # topic: handler
    follow_ups: list[FollowUp] = field(default_factory=list)  # events emitted on those, to apply
    followed: list[FollowUp] = field(default_factory=list)  # the follow-ups applied in the batch
    # topics whose events go to their service once committed (``UnitOfWork.hands``: topic: receiver)
    hands_on: Mapping[str, object] = field(default_factory=dict)
    handed_on: list[FollowUp] = field(default_factory=list)  # events emitted on those, in order
    _claimed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.session.sync_session.info[BATCH_INFO] = self  # what the listeners below answer for

    def close(self) -> None:
        """The batch's use cases are done: none joins it any more, and its session's listeners forget it."""
        self.open = False
        self.session.sync_session.info.pop(BATCH_INFO, None)

    def joins(self, owner: object) -> bool:
        """Whether a use case of ``owner`` running now belongs to this batch (same task, still open)."""
        return self.open and owner is self.owner and asyncio.current_task() is self.task

    def claim(self, event_id: str, topic: str) -> bool:
        """Claim an event for this batch; False when the inbox had it or the batch already claimed it."""
        if event_id in self.applied or event_id in self._claimed:
            return False
        self.claims.append((event_id, topic))
        self._claimed.add(event_id)
        return True

    def claimed(self, event_id: str) -> bool:
        """Whether a use case of this batch claimed ``event_id`` (and was not rolled back since)."""
        return event_id in self._claimed

    def spoiled(self) -> bool:
        """Whether a use case failed in a batch without savepoints: its half-done writes are in it."""
        return not self.careful and self.failures > 0

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[AsyncSession]:
        """A use case's share of the batch: when careful, its changes, claims and events go if it fails."""
        mark, sent, followed, handed = len(self.claims), len(self.outgoing), len(self.follow_ups), len(self.handed_on)
        try:
            if self.careful:
                async with self.session.begin_nested():
                    yield self.session
            else:
                yield self.session
        except BaseException:
            self.failures += 1
            self.memo.clear()  # what the failed use case left there may be rolled back with it
            for event_id, _topic in self.claims[mark:]:
                self._claimed.discard(event_id)
            del self.claims[mark:]
            del self.outgoing[sent:]
            del self.follow_ups[followed:]
            del self.handed_on[handed:]
            raise

    def emitted(self, topic: str, envelope: Any, context: str | None) -> None:
        """A use case of the batch emitted ``envelope`` (in trace ``context``): kept to be applied
        in the batch when the service folds its topic (``shared.bus.folded``), or to be handed to
        the service once the batch committed when it takes its topic's events from there
        (``UnitOfWork.hand_on``)."""
        if topic in self.folds:
            self.follow_ups.append(FollowUp(topic, envelope, context))
        if topic in self.hands_on:
            self.handed_on.append(FollowUp(topic, envelope, context))


@dataclass(frozen=True)
class FollowUp:
    """An event a batch emitted on a topic its service folds (applied in that batch) or hands on
    (given to the service once the batch committed)."""

    topic: str
    envelope: Any  # shared.events.Envelope
    context: str | None  # the trace context it was emitted in (``shared.tracing.current_context``)


class AppliedHere:
    """The ids of the events this process applied in the batch that emitted them
    (``shared.bus.folded``) or right after it committed (``UnitOfWork.hand_on``), the newest
    ``size`` of them: their copies from the topic are skipped without a transaction. A copy whose
    id was forgotten (or that arrives after a restart, or at another instance) is found applied in
    the inbox, as any redelivery is."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._ids: dict[str, None] = {}

    def add(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            self._ids[event_id] = None
        while len(self._ids) > self.size:
            del self._ids[next(iter(self._ids))]

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


@dataclass
class Index:
    """A batch's rows of one model by the values of some of its columns (``index_rows``): every row
    whose values are all in ``covered`` was read ahead, or was added by a use case of the batch."""

    columns: tuple[str, ...]
    covered: tuple[frozenset[object], ...]  # per column: the values whose rows were all read
    rows: dict[tuple[object, ...], list[object]] = field(default_factory=dict)
    key_of: Callable[[object], tuple[object, ...]] = field(init=False, repr=False)  # a row's values of columns

    def __post_init__(self) -> None:
        # attrgetter: a row's key in one call (a generator of getattr took 1 µs a row; the batch's
        # look-ups check every row they answer with)
        get = attrgetter(*self.columns)
        self.key_of = get if len(self.columns) > 1 else lambda row: (get(row),)

    def add(self, row: object) -> None:
        self.rows.setdefault(self.key_of(row), []).append(row)

    def covers(self, key: tuple[object, ...]) -> bool:
        return all(value in values for value, values in zip(key, self.covered, strict=True))

    def covers_all(self, values: Iterable[Iterable[object]]) -> bool:
        """Whether every key made of these values (one set per column) is covered."""
        return all(set(found) <= covered for found, covered in zip(values, self.covered, strict=True))


CURRENT_BATCH: ContextVar[Batch | None] = ContextVar("gantry_batch", default=None)
Row = TypeVar("Row")
BATCH_INFO = "gantry_batch"  # in the batch's session's ``info``: the batch


# Listened for once, on every session: adding a listener to each batch's session cost SQLAlchemy
# 9 µs each time (``event.listen`` was about 1 % of catalog's and deploy's samples under load).
@event.listens_for(Session, "pending_to_persistent")
def _persisted(session: Session, row: object) -> None:
    """A row the batch added was flushed: a key noted absent (``note_absent``) has it now."""
    batch = session.info.get(BATCH_INFO)
    if batch is not None and batch.absent:
        batch.absent.discard(inspect(row).key)


@event.listens_for(Session, "transient_to_pending")
def _pending(session: Session, row: object) -> None:
    """A row a use case of the batch added goes into the batch's indexes of its model (``index_rows``)."""
    batch = session.info.get(BATCH_INFO)
    if batch is not None and batch.indexes:
        _added(batch, row)


def note_absent(session: AsyncSession, model: type, keys: Iterable[object]) -> None:
    """A read ahead (``bus.with_prefetch``) looked for these primary keys of ``model`` in the
    batch's session and found none: ``get_row`` answers them without a statement until a use case
    of the batch adds such a row."""
    batch = CURRENT_BATCH.get()
    if batch is None or batch.session is not session:
        return
    sync = session.sync_session
    batch.absent.update(sync.identity_key(model, key) for key in keys)


def held_rows(session: AsyncSession, model: type[Row], keys: Iterable[object]) -> dict[object, Row]:
    """The rows of ``model`` with these primary keys that ``session`` holds loaded, by key: read,
    or added and flushed, earlier in its transaction; not expired (a rolled-back savepoint expires
    what it changed) and not being deleted. Reading them again would give back the same objects
    unchanged (SQLAlchemy keeps what it holds), so a read ahead leaves them out."""
    sync = session.sync_session
    if not sync.identity_map:  # a batch's first read: nothing held, no key to look up
        return {}
    deleted = sync.deleted
    found: dict[object, Row] = {}
    for key in keys:
        row = sync.identity_map.get(sync.identity_key(model, key))
        if row is not None and not inspect(row).expired_attributes and row not in deleted:
            found[key] = row
    return found


def indexed_already(session: AsyncSession, model: type, columns: Mapping[str, Iterable[object]]) -> bool:
    """Whether the batch's index of ``model`` by these columns (``index_rows``) covers every value
    given: the rows holding them were read ahead, or added by its use cases since, so ``indexed``
    answers for them without a second read (the successes a batch of hooks announces, folded into
    it, name the pipelines the hooks' read ahead read)."""
    batch = CURRENT_BATCH.get()
    if batch is None or batch.session is not session:
        return False
    index = batch.indexes.get((model, tuple(columns)))
    return index is not None and index.covers_all(columns.values())


def index_rows(
    session: AsyncSession,
    model: type,
    columns: Mapping[str, Iterable[object]],
    rows: Iterable[object],
    *,
    locked: bool = False,
) -> None:
    """A read ahead (``bus.with_prefetch``) read every row of ``model`` whose ``columns`` hold the
    values given (one set per column; ``rows``): ``indexed`` answers the batch's look-ups of such
    values from them, and from the rows the batch's use cases add, without a statement (and
    without the flush a query makes first). The columns must be ones the batch's use cases never
    change on an existing row.

    Only where nothing else writes those rows until the batch commits: under SQLite's write lock
    (``holds_write_lock``), or, on PostgreSQL, when the caller took the locks every writer of them
    takes (``locked``). Elsewhere each look-up asks the database, and sees what committed since."""
    batch = CURRENT_BATCH.get()
    if batch is None or batch.session is not session or not (locked or holds_write_lock(session)):
        return
    index = Index(tuple(columns), tuple(frozenset(values) for values in columns.values()))
    for row in rows:
        index.add(row)
    batch.indexes[(model, index.columns)] = index


def _added(batch: Batch, row: object) -> None:
    for (model, _columns), index in batch.indexes.items():
        if isinstance(row, model):
            index.add(row)


def indexed(session: AsyncSession, model: type[Row], **key: object) -> list[Row] | None:
    """The rows of ``model`` whose columns hold ``key``'s values, as the batch's index has them
    (``index_rows``), in the order they were read or added; None when no index covers the key or a
    row of it is not certain (expired, rolled back, deleted since), and the caller asks the database."""
    batch = CURRENT_BATCH.get()
    if batch is None or batch.session is not session:
        return None
    index = batch.indexes.get((model, tuple(key)))
    values = tuple(key.values())
    if index is None or not index.covers(values):
        return None
    found: list[Row] = []
    rows = index.rows.get(values, ())
    deleted = session.sync_session.deleted if rows else ()  # a new set at each call: once per look-up
    for row in rows:
        state = inspect(row)
        if state.expired_attributes or not (state.persistent or state.pending):
            return None  # a savepoint rolled back, or it was deleted: the database knows
        if row in deleted:
            continue
        if index.key_of(row) != values:
            return None
        found.append(row)  # type: ignore[arg-type]
    return found


async def first_row(session: AsyncSession, model: type[Row], query: Any, **key: Any) -> Row | None:
    """The one row of ``model`` whose columns hold ``key``'s values, from the batch's index, or
    else the first row of ``query`` (its bound values named as the columns), also when the index
    holds several: the query's order decides."""
    rows = indexed(session, model, **key)
    if rows is not None and len(rows) <= 1:
        return rows[0] if rows else None
    result: Row | None = (await session.exec(query, params=key)).first()
    return result


def batch_memo(session: AsyncSession) -> dict[object, object] | None:
    """What the batch's use cases keep for one another while they run in ``session`` (a look-up's
    answer, kept up to date by the use cases that change it); None outside a batch. It is emptied
    when a use case fails, as its changes may be rolled back."""
    batch = CURRENT_BATCH.get()
    return batch.memo if batch is not None and batch.session is session else None


async def get_row(session: AsyncSession, model: type[Row], key: object) -> Row | None:
    """``session.get``, without a statement for a key the batch read ahead and did not find (a row
    a use case of the batch added since is found: pending in the session, or looked for again once
    flushed)."""
    batch = CURRENT_BATCH.get()
    identity = session.sync_session.identity_key(model, key)
    if batch is None or batch.session is not session or identity not in batch.absent:
        return await session.get(model, key)
    pending = (row for row in session.new if isinstance(row, model))
    return next((row for row in pending if inspect(model).identity_key_from_instance(row) == identity), None)


def holds_write_lock(session: AsyncSession) -> bool:
    """Whether ``session`` is a consumer batch's on SQLite: it took the write lock as it began
    (``write_lock``), so no other transaction writes until it commits."""
    batch = CURRENT_BATCH.get()
    return batch is not None and batch.session is session and session.get_bind().dialect.name == "sqlite"


def current_batch(owner: object) -> Batch | None:
    """The batch a use case of ``owner`` running now belongs to, if any."""
    batch = CURRENT_BATCH.get()
    return batch if batch is not None and batch.joins(owner) else None


_BEGIN_IMMEDIATE = text("BEGIN IMMEDIATE")
# Each engine's turn to write, per event loop: SQLite lets one transaction write at a time.
_TURNS: weakref.WeakKeyDictionary[Engine, dict[asyncio.AbstractEventLoop, asyncio.Lock]] = weakref.WeakKeyDictionary()
# The turns the running task holds, by engine: a use case that runs inside another's turn (a
# batch's, or a use case's that calls another) goes on in it instead of waiting for itself.
_HOLDING: ContextVar[tuple[tuple[Engine, asyncio.Task[Any] | None], ...]] = ContextVar("gantry_write_turns", default=())


@asynccontextmanager
async def write_turn(session: AsyncSession) -> AsyncIterator[None]:
    """On SQLite, make this process's writers take turns, first come first served, before their
    transaction asks SQLite for the write lock or opens a connection; hold the turn until the
    transaction ends (enter it before ``session.begin()``). Consumer batches, the outbox relay and
    every use case's transaction (``UnitOfWork.begin``, a REST request's) take it.

    Without it a writer that finds SQLite's lock taken sleeps in SQLite's busy handler (1, 2, 5, 10
    … 100 ms at a time), holding a pooled connection: it may wake long after the lock came free or
    see a later writer take it first (at 100 hooks/s a batch's first statement took 20–60 ms at p90
    and up to 360 ms), and fifteen of them asleep took every connection of the pool, so a batch
    holding the lock that needed a second connection waited for one until SQLite's 30 s busy
    timeout failed them all. Reentrant within a task. PostgreSQL needs nothing: its writers lock
    rows, not the database (ADR 17)."""
    engine = session.get_bind().engine
    if engine.dialect.name != "sqlite":
        yield
        return
    held = _HOLDING.get()
    mine = (engine, asyncio.current_task())
    if mine in held:
        yield
        return
    loop = asyncio.get_running_loop()
    turns = _TURNS.setdefault(engine, {})
    turn = turns.get(loop)
    if turn is None:
        turn = turns[loop] = asyncio.Lock()
        for other in [other for other in turns if other.is_closed()]:
            del turns[other]  # a test's loop, gone
    async with turn:
        token = _HOLDING.set((*held, mine))
        try:
            yield
        finally:
            _HOLDING.reset(token)


async def write_lock(session: AsyncSession) -> None:
    """On SQLite, take the write lock as the batch begins (``BEGIN IMMEDIATE``): its reads and
    writes then see one state, its savepoints nest inside it, and another writer waits for the
    commit instead of failing half-way. PostgreSQL needs nothing (row locks, advisory locks)."""
    if session.get_bind().dialect.name == "sqlite":
        await (await session.connection()).execute(_BEGIN_IMMEDIATE)


def unique_ids(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))
