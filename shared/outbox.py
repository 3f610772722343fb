"""Outbox and inbox: nothing lost, nothing done twice.

A use case writes its state change and its outgoing events in ONE transaction (``UnitOfWork``);
after the commit the relay is woken and publishes the outbox in order, marking rows published
only once the broker acknowledged them. A crash between publish and mark republishes, which the
consumers' inbox (event ids applied, written in the same transaction as the effect) makes harmless.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any, Protocol

from aiokafka.errors import (
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from sqlalchemy import ColumnElement, bindparam, delete, func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import metrics
from shared.batches import (
    CURRENT_BATCH,
    AppliedHere,
    Batch,
    BatchConflict,
    FollowUp,
    current_batch,
    unique_ids,
    write_lock,
    write_turn,
)
from shared.db import UtcDateTime
from shared.errors import NotFound
from shared.events import TOPIC_OF, Emittable, Envelope, Topic, new_event, utcnow
from shared.logging import get_logger
from shared.sqlite_one_hop import sent_with_commit
from shared.tracing import Headers, current_context, relay_headers

log = get_logger(__name__)
PRUNE_EVERY_SECONDS = 3600.0
# The relay is woken by each commit of this process that wrote outbox rows (`gantry outbox retry`
# goes through the service's API, so it is one); the poll is only a safety net for rows another
# process wrote (another instance's on a shared PostgreSQL, left by one that stopped), so it can be
# slow and an idle service does not read its outbox every second.
POLL_SECONDS = 5.0
# On PostgreSQL another instance may hold the outbox lock when this one is woken: it relays what
# was there when it began, so this one looks again soon rather than at the next poll.
LOCK_HELD_RETRY_SECONDS = 0.1


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"
    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True, max_length=64)
    topic: str = Field(max_length=128)
    key: str = Field(max_length=256)
    payload: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    published_at: datetime | None = Field(default=None, index=True, sa_type=UtcDateTime)
    # the trace context the row was written in (W3C carrier, JSON), sent in the record's headers
    trace_context: str | None = Field(default=None, max_length=1024)


class InboxEntry(SQLModel, table=True):
    __tablename__ = "inbox"
    event_id: str = Field(primary_key=True, max_length=64)
    topic: str = Field(max_length=128)
    applied_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class OutboxDeadLetter(SQLModel, table=True):
    """An outbox row that failed for a permanent reason, kept with the reason until retried or discarded."""

    __tablename__ = "outbox_dead_letters"
    outbox_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    event_id: str = Field(max_length=64)
    topic: str = Field(max_length=128)
    key: str = Field(index=True, max_length=256)
    payload: str
    created_at: datetime = Field(sa_type=UtcDateTime)
    failed_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    attempts: int
    reason: str


OUTBOX_TABLES: tuple[type[SQLModel], ...] = (OutboxMessage, InboxEntry, OutboxDeadLetter)


def add_event(session: AsyncSession, topic: Topic, envelope: Envelope, key: str) -> None:
    """Queue ``envelope`` for ``topic`` in the caller's transaction.

    In a consumer's batch, the row is kept by the batch and inserted with the batch's other rows in
    one statement before it commits (a use case that fails takes its rows with it): added to the
    session, each row was flushed alone by the next use case's first read. Nothing in a batch reads
    the outbox, and the rows keep the order they were emitted in."""
    row: dict[str, Any] = {
        "event_id": envelope.id,
        "topic": topic.value,
        "key": key,
        "payload": envelope.model_dump_json(),
        "created_at": utcnow(),
        "published_at": None,
        "trace_context": current_context(),
    }
    batch = CURRENT_BATCH.get()
    if batch is not None and batch.open and batch.session is session:
        batch.outgoing.append(row)
        batch.emitted(topic.value, envelope, row["trace_context"])
    else:
        session.add(OutboxMessage(**row))
        if topic.value in session.info.get("hands_on", ()):  # handed on once committed (UnitOfWork.hand_on)
            session.info.setdefault("handed_on", []).append(FollowUp(topic.value, envelope, row["trace_context"]))
    session.info["outbox"] = True


def emit(
    session: AsyncSession,
    data: Emittable,
    *,
    cause: Envelope | None = None,
    correlation_id: str | None = None,
) -> Envelope:
    """Queue an event in the caller's transaction: its topic from the data's type, its key and
    subject from the data, its source from the unit of work, its correlation (and causation) from
    the event that caused it, else from ``correlation_id`` (a request's, a hook's)."""
    topic = TOPIC_OF[type(data)]
    envelope = new_event(
        topic,
        data,
        source=session.info.get("source", "gantry"),
        subject=data.subject,
        correlation_id=correlation_id,
        cause=cause,
    )
    add_event(session, topic, envelope, key=data.record_key)
    return envelope


async def claim_inbox(session: AsyncSession, envelope: Envelope) -> bool:
    """Record ``envelope`` as applied; False when it already was (a redelivery to skip). In a
    batch, answered from what the batch read and claimed: no round trip, one insert at its commit."""
    batch = CURRENT_BATCH.get()
    if batch is not None and batch.session is session:
        return batch.claim(envelope.id, envelope.type)
    if await session.get(InboxEntry, envelope.id) is not None:
        return False
    session.add(InboxEntry(event_id=envelope.id, topic=envelope.type))
    return True


def record_applied(session: AsyncSession, envelope: Envelope) -> None:
    """Record ``envelope`` as applied without looking first: for a use case that checked the inbox
    just before (a redelivery applied meanwhile makes the insert fail, and the event is retried)."""
    session.add(InboxEntry(event_id=envelope.id, topic=envelope.type))


class TransactionHook(Protocol):
    """What the current request adds to a transaction that is about to commit (``shared.audit``)."""

    def joins(self, session: AsyncSession) -> bool:
        """Add to ``session``'s transaction, just before it commits; True when something was added."""

    def committed(self) -> None:
        """The transaction it joined has committed."""


TRANSACTION_HOOK: ContextVar[TransactionHook | None] = ContextVar("gantry_transaction_hook", default=None)


class UnitOfWork:
    """One transaction per use case; wakes the relay when it committed outgoing events.

    ``source`` names the service whose events its transactions emit (``gantry/<service>``)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, source: str = "gantry") -> None:
        self.sessions = sessions
        self.source = source
        self._listeners: list[Callable[[], None]] = []
        # topics whose events this service applies in the batch that emits them (``shared.bus.folded``)
        self.folds: dict[str, Callable[[Envelope], Awaitable[object]]] = {}
        # topics whose events a batch of this service emits are handed to it once committed (``hand_on``)
        self.hands: dict[str, Callable[[list[FollowUp]], None]] = {}
        self._wake_owed = False  # a commit handed events on and left waking the relay to their receiver
        self.applied_here = AppliedHere()

    def on_outbox_commit(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def fold(self, topic: str, handler: Callable[[Envelope], Awaitable[object]]) -> None:
        """Apply the events of ``topic`` that a batch of this service emits in that same batch,
        with ``handler`` (``shared.bus.folded``)."""
        self.folds[topic] = handler

    def hand_on(self, topic: str, receiver: Callable[[list[FollowUp]], None]) -> None:
        """Once a batch or a use case's transaction of this service commits, give ``receiver`` the
        events of ``topic`` its use cases emitted (those not rolled back), in the order emitted, at
        once and without waiting (``receiver`` queues them). They are published as ever; a
        receiver that applies one adds its id to ``applied_here`` so that its copy from the topic
        is skipped. The relay is then woken by the receiver (``wake_relay_if_owed``), once it has
        dealt with them: what their application emits goes out in the same relay cycle as they do."""
        self.hands[topic] = receiver

    def wake_relay(self) -> None:
        """Tell the relay that outgoing events committed (``on_outbox_commit``'s listeners): its
        next cycle publishes every row committed before, those handed on included."""
        self._wake_owed = False
        for listener in self._listeners:
            listener()

    def wake_relay_if_owed(self) -> None:
        """Wake the relay unless it was woken since a commit handed events on (by the commit of
        what their receiver applied, say): a second wake would only make it read an empty outbox."""
        if self._wake_owed:
            self.wake_relay()

    def _committed(self, outbox: bool, handed: bool) -> None:
        """After a commit: wake the relay for its outgoing events, or owe the wake to the receiver
        of those it handed on."""
        if outbox and handed:
            self._wake_owed = True
        elif outbox:
            self.wake_relay()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        batch = current_batch(self)
        if batch is not None:  # a consumer's batch: this use case is a savepoint of its transaction
            async with batch.savepoint() as session:
                yield session
            return
        async with self.sessions() as session:
            session.info["source"] = self.source
            if self.hands:
                session.info["hands_on"] = self.hands
            hook = TRANSACTION_HOOK.get()
            async with write_turn(session), session.begin():  # on SQLite, this process's writers in turn
                yield session
                joined = hook is not None and hook.joins(session)  # only when the body ended well
            if joined and hook is not None:
                hook.committed()
            handed = self._hand_on(session.info.pop("handed_on", ()))  # committed: what it emitted there
            self._committed(session.info.pop("outbox", False), handed)

    @asynccontextmanager
    async def batch(self, event_ids: Iterable[str], *, careful: bool = True) -> AsyncIterator[Batch]:
        """One transaction for a batch of events (``shared.batches``): the inbox is read once for
        all of them, the use cases that run inside join it as savepoints, the ids they claimed are
        inserted in one statement and everything commits once."""
        async with self.sessions() as session:
            session.info["source"] = self.source
            claiming = False
            try:
                async with write_turn(session), session.begin():
                    await write_lock(session)
                    applied = await applied_among(session, event_ids)
                    batch = Batch(self, session, applied, careful=careful, folds=self.folds, hands_on=self.hands)
                    token = CURRENT_BATCH.set(batch)
                    try:
                        yield batch
                        with sent_with_commit():  # on SQLite, one hop with the COMMIT
                            await _insert_outgoing(session, batch)
                            claiming = True
                            await _insert_claims(session, batch)
                    finally:
                        batch.close()
                        CURRENT_BATCH.reset(token)
            except IntegrityError as exc:
                if claiming:  # the inbox ids met another instance's, at their insert or (SQLite) the COMMIT
                    raise BatchConflict("another consumer applied some of these events meanwhile") from exc
                raise
            if batch.followed:  # committed: their copies from the topic need not open a transaction
                self.applied_here.add(done.envelope.id for done in batch.followed if batch.claimed(done.envelope.id))
            self._committed(session.info.pop("outbox", False), self._hand_on(batch.handed_on))

    def _hand_on(self, handed: Sequence[FollowUp]) -> bool:
        """Give each receiver (``hand_on``) the committed events of its topic, in the order emitted;
        whether any was given some (it then wakes the relay)."""
        given = False
        for topic, receiver in self.hands.items():
            if mine := [emitted for emitted in handed if emitted.topic == topic]:
                receiver(mine)
                given = True
        return given


# The statements each batch and each relay cycle runs, built once with their values bound at each
# call: building a statement cost SQLAlchemy more than running it (``python -m bench.statements``).
_APPLIED_AMONG = select(InboxEntry.event_id).where(col(InboxEntry.event_id).in_(bindparam("ids", expanding=True)))
_INSERT_CLAIMS = insert(InboxEntry)
_INSERT_OUTGOING = insert(OutboxMessage)


async def applied_among(session: AsyncSession, event_ids: Iterable[str]) -> frozenset[str]:
    """Which of ``event_ids`` the inbox holds (applied already), in one statement."""
    ids = unique_ids(event_ids)
    if not ids:
        return frozenset()
    return frozenset((await session.exec(_APPLIED_AMONG, params={"ids": ids})).all())


async def _insert_outgoing(session: AsyncSession, batch: Batch) -> None:
    """The events the batch's use cases emitted, in one statement, in the order they were emitted."""
    if batch.outgoing:
        await (await session.connection()).execute(_INSERT_OUTGOING, batch.outgoing)


async def _insert_claims(session: AsyncSession, batch: Batch) -> None:
    """The batch's inbox ids, in one statement; a clash means another instance applied some
    (``UnitOfWork.batch`` makes it a ``BatchConflict``)."""
    if batch.claims:
        rows = [{"event_id": event_id, "topic": topic, "applied_at": utcnow()} for event_id, topic in batch.claims]
        await (await session.connection()).execute(_INSERT_CLAIMS, rows)


class Record(tuple[str, str, bytes]):
    """A (topic, key, value) record to publish, with the Kafka headers that go with it."""

    headers: Headers

    def __new__(cls, topic: str, key: str, value: bytes, headers: Headers | None = None) -> Record:
        record = super().__new__(cls, (topic, key, value))
        record.headers = headers or []
        return record


class HeldBack(Exception):
    """Not sent: an earlier record of the same key was refused, and a key's records keep their order."""


# Sends (topic, key, value) records in order and returns, once the broker answered each, what
# became of each: None when acknowledged, else the error (``HeldBack`` for the records of a key
# behind one the producer refused before sending).
Publish = Callable[[list[tuple[str, str, bytes]]], Awaitable[list[BaseException | None]]]
# Failures that no retry mends: the record is too large for the producer or the broker.
PERMANENT_FAILURES: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
)
MAX_ATTEMPTS = 3  # tries of a permanently failing row before it is dead-lettered


class OutboxRelay:
    """Publishes outbox rows in id order: woken on commit, with a poll as a safety net.

    A row that fails for a permanent reason is tried ``MAX_ATTEMPTS`` times, then moved to the
    dead-letter table with the reason: it never blocks the rows behind it. Rows with the same key
    wait behind it (one service's events stay in order) until an org admin retries or discards it.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publish: Publish,
        *,
        poll_interval: float = POLL_SECONDS,
        batch: int = 200,
        lock_name: str = "outbox",
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self.sessions = sessions
        self.lock_name = lock_name
        self.retention = retention
        self._pruned_at = 0.0
        self.publish = publish
        self.poll_interval = poll_interval
        self.batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempts: dict[int, int] = {}
        self._lock_held = False  # the last try found another instance relaying (PostgreSQL)
        self._full = False  # the last try read a whole batch: more rows may be waiting
        # built once: the relay reads it at each wake, as plain rows (no objects for the session to
        # track: the relay marks them by id)
        self._pending = (
            select(*OUTBOX_COLUMNS).where(*_unpublished(held=False)).order_by(col(OutboxMessage.id)).limit(batch)
        )

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                # until a read comes back short: the rows committed since woke the relay again,
                # so it does not read an empty outbox after each batch
                while await self.relay_once() and self._full:
                    pass
                if time.monotonic() - self._pruned_at > PRUNE_EVERY_SECONDS:
                    await self.prune()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database down: keep the rows, retry later
                failures += 1
                log.warning("outbox relay failed, will retry", error=repr(exc), attempt=failures)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            wait = LOCK_HELD_RETRY_SECONDS if self._lock_held else self.poll_interval
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

    async def prune(self, now: datetime | None = None) -> int:
        """Forget published outbox rows and applied inbox ids older than the retention: Kafka has
        long dropped what could be redelivered by then. Returns how many rows went."""
        cutoff = (now or utcnow()) - self.retention
        async with self.sessions() as session:
            published = await session.exec(delete(OutboxMessage).where(col(OutboxMessage.published_at) < cutoff))
            applied = await session.exec(delete(InboxEntry).where(col(InboxEntry.applied_at) < cutoff))
            await session.commit()
        self._pruned_at = time.monotonic()
        removed = int(published.rowcount or 0) + int(applied.rowcount or 0)
        if removed:
            log.info("outbox and inbox pruned", removed=removed, older_than=cutoff.isoformat())
        return removed

    async def pending(self) -> int:
        """Outbox rows waiting to be published (not those held behind a dead-lettered row)."""
        async with self.sessions() as session:
            query = select(func.count()).select_from(OutboxMessage).where(*_unpublished(held=False))
            return int((await session.exec(query)).one())

    async def held(self) -> int:
        """Outbox rows waiting behind a dead-lettered row of the same key."""
        async with self.sessions() as session:
            query = select(func.count()).select_from(OutboxMessage).where(*_unpublished(held=True))
            return int((await session.exec(query)).one())

    async def _exclusive(self, session: AsyncSession) -> bool:
        """On PostgreSQL several instances of a service share one outbox: one relays at a time
        (a transaction-scoped advisory lock), so each row is published once, in order."""
        if session.get_bind().dialect.name != "postgresql":
            return True
        query = select(func.pg_try_advisory_xact_lock(func.hashtext(self.lock_name)))
        return bool((await session.exec(query)).one())

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; returns how many rows left the outbox (published or
        dead-lettered). Raises after recording what went out when the broker failed for a while."""
        async with self.sessions() as session:
            self._lock_held = not await self._exclusive(session)
            if self._lock_held:
                return 0  # another instance of this service is relaying: looked at again soon
            rows = (await session.exec(self._pending)).all()
            self._full = len(rows) == self.batch
            if not rows:
                return 0
            outcomes = await self.publish([_record(row) for row in rows])
            published: list[int] = []
            done, outage = 0, None
            async with write_turn(session):  # what the relay writes, after the broker answered
                for row, outcome in zip(rows, outcomes, strict=True):
                    if outage is not None:
                        break  # what follows an outage goes again, after it: no key overtakes itself
                    if outcome is None:
                        assert row.id is not None
                        published.append(row.id)
                        self._attempts.pop(row.id, None)
                    elif isinstance(outcome, PERMANENT_FAILURES):
                        done += await self._failed_for_good(session, row, outcome)
                    elif not isinstance(outcome, HeldBack):
                        outage = outcome
                with sent_with_commit():  # on SQLite, one hop with the COMMIT
                    await _mark_published(session, published)
                await session.commit()
            done += len(published)
        log.debug("outbox published", count=done)
        if done:
            metrics.observe_relayed(done)
        if outage is not None and not done:
            raise outage
        return done

    async def _failed_for_good(self, session: AsyncSession, row: OutboxRow, error: BaseException) -> int:
        """Count a permanent failure; at ``MAX_ATTEMPTS`` move the row to the dead-letter table."""
        assert row.id is not None
        attempts = self._attempts[row.id] = self._attempts.get(row.id, 0) + 1
        reason = f"{error.__class__.__name__}: {error}"
        if attempts < MAX_ATTEMPTS:
            log.warning(
                "outbox row refused, will try again",
                row_id=row.id,
                event_id=row.event_id,
                topic=row.topic,
                attempt=attempts,
                reason=reason,
            )
            return 0
        self._attempts.pop(row.id, None)
        session.add(
            OutboxDeadLetter(
                outbox_id=row.id,
                event_id=row.event_id,
                topic=row.topic,
                key=row.key,
                payload=row.payload,
                created_at=row.created_at,
                attempts=attempts,
                reason=reason[:2000],
            )
        )
        await session.exec(delete(OutboxMessage).where(col(OutboxMessage.id) == row.id))
        log.error(
            "outbox row dead-lettered: the rows of its key wait until an org admin retries or "
            "discards it (gantry outbox)",
            row_id=row.id,
            event_id=row.event_id,
            topic=row.topic,
            key=row.key,
            reason=reason,
        )
        return 1


OUTBOX_COLUMNS = tuple(OutboxMessage.__table__.columns)  # type: ignore[attr-defined]
OutboxRow = Any  # a row of OUTBOX_COLUMNS: OutboxMessage's fields, read as attributes


_MARK_PUBLISHED = (
    update(OutboxMessage)
    .where(col(OutboxMessage.id).in_(bindparam("ids", expanding=True)))
    .values(published_at=bindparam("published_at", type_=UtcDateTime()))
)


async def _mark_published(session: AsyncSession, ids: list[int]) -> None:
    """Mark a batch's acknowledged rows published, in one statement."""
    if ids:
        await (await session.connection()).execute(_MARK_PUBLISHED, {"ids": ids, "published_at": utcnow()})


def _record(row: OutboxRow) -> Record:
    headers = relay_headers(row.trace_context, row.topic, row.created_at)
    return Record(row.topic, row.key, row.payload.encode(), headers)


def _unpublished(*, held: bool) -> tuple[ColumnElement[bool], ...]:
    """Unpublished rows whose key is (``held``) or is not behind a dead-lettered row."""
    behind = col(OutboxMessage.key).in_(select(OutboxDeadLetter.key))
    return col(OutboxMessage.published_at).is_(None), behind if held else ~behind


async def dead_letters(sessions: async_sessionmaker[AsyncSession], limit: int = 100) -> list[OutboxDeadLetter]:
    """Dead-lettered outbox rows, oldest first."""
    async with sessions() as session:
        query = select(OutboxDeadLetter).order_by(col(OutboxDeadLetter.outbox_id)).limit(limit)
        return list((await session.exec(query)).all())


async def retry_dead_letter(uow: UnitOfWork, outbox_id: int) -> OutboxDeadLetter:
    """Put a dead-lettered row back in the outbox under its own id, so it goes before the rows of
    its key that waited behind it; the relay tries it again at once."""
    async with uow.begin() as session:
        dead = await _dead_letter(session, outbox_id)
        session.add(
            OutboxMessage(
                id=dead.outbox_id,
                event_id=dead.event_id,
                topic=dead.topic,
                key=dead.key,
                payload=dead.payload,
                created_at=dead.created_at,
            )
        )
        await session.delete(dead)
        session.info["outbox"] = True
    return dead


async def discard_dead_letter(uow: UnitOfWork, outbox_id: int) -> OutboxDeadLetter:
    """Drop a dead-lettered row for good; the rows of its key that waited go on."""
    async with uow.begin() as session:
        dead = await _dead_letter(session, outbox_id)
        await session.delete(dead)
        session.info["outbox"] = True  # wake the relay: the held rows are free now
    return dead


async def _dead_letter(session: AsyncSession, outbox_id: int) -> OutboxDeadLetter:
    dead = await session.get(OutboxDeadLetter, outbox_id)
    if dead is None:
        raise NotFound(f"no dead-lettered outbox row {outbox_id}: list them with `gantry outbox list`")
    return dead


def decode_envelope(raw: bytes | None) -> Envelope:
    if raw is None:
        raise ValueError("empty record value")
    return Envelope.model_validate(json.loads(raw))
