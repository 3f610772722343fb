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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from sqlalchemy import delete, func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import UtcDateTime
from shared.events import Envelope, Topic, utcnow
from shared.logging import get_logger

log = get_logger(__name__)
PRUNE_EVERY_SECONDS = 3600.0


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"
    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True, max_length=64)
    topic: str = Field(max_length=128)
    key: str = Field(max_length=256)
    payload: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    published_at: datetime | None = Field(default=None, index=True, sa_type=UtcDateTime)


class InboxEntry(SQLModel, table=True):
    __tablename__ = "inbox"
    event_id: str = Field(primary_key=True, max_length=64)
    topic: str = Field(max_length=128)
    applied_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


OUTBOX_TABLES: tuple[type[SQLModel], ...] = (OutboxMessage, InboxEntry)


def add_event(session: AsyncSession, topic: Topic, envelope: Envelope, key: str) -> None:
    """Queue ``envelope`` for ``topic`` in the caller's transaction."""
    session.add(
        OutboxMessage(
            event_id=envelope.id, topic=topic.value, key=key, payload=envelope.model_dump_json()
        )
    )
    session.info["outbox"] = True


async def claim_inbox(session: AsyncSession, envelope: Envelope) -> bool:
    """Record ``envelope`` as applied; False when it already was (a redelivery to skip)."""
    if await session.get(InboxEntry, envelope.id) is not None:
        return False
    session.add(InboxEntry(event_id=envelope.id, topic=envelope.type))
    return True


class UnitOfWork:
    """One transaction per use case; wakes the relay when it committed outgoing events."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._listeners: list[Callable[[], None]] = []

    def on_outbox_commit(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            async with session.begin():
                yield session
            if session.info.pop("outbox", False):
                for listener in self._listeners:
                    listener()


# Sends (topic, key, value) records in order and returns once the broker acknowledged all.
Publish = Callable[[list[tuple[str, str, bytes]]], Awaitable[None]]


class OutboxRelay:
    """Publishes outbox rows in id order: woken on commit, with a poll as a safety net."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publish: Publish,
        *,
        poll_interval: float = 1.0,
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
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                while await self.relay_once():
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
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                pass
            self._wake.clear()

    async def prune(self, now: datetime | None = None) -> int:
        """Forget published outbox rows and applied inbox ids older than the retention: Kafka has
        long dropped what could be redelivered by then. Returns how many rows went."""
        cutoff = (now or utcnow()) - self.retention
        async with self.sessions() as session:
            published = await session.exec(
                delete(OutboxMessage).where(col(OutboxMessage.published_at) < cutoff)
            )
            applied = await session.exec(delete(InboxEntry).where(col(InboxEntry.applied_at) < cutoff))
            await session.commit()
        self._pruned_at = time.monotonic()
        removed = int(published.rowcount or 0) + int(applied.rowcount or 0)
        if removed:
            log.info("outbox and inbox pruned", removed=removed, older_than=cutoff.isoformat())
        return removed

    async def pending(self) -> int:
        """Outbox rows not yet published."""
        async with self.sessions() as session:
            query = select(func.count()).select_from(OutboxMessage).where(col(OutboxMessage.published_at).is_(None))
            return int((await session.exec(query)).one())

    async def _exclusive(self, session: AsyncSession) -> bool:
        """On PostgreSQL several instances of a service share one outbox: one relays at a time
        (a transaction-scoped advisory lock), so each row is published once, in order."""
        if session.get_bind().dialect.name != "postgresql":
            return True
        query = select(func.pg_try_advisory_xact_lock(func.hashtext(self.lock_name)))
        return bool((await session.exec(query)).one())

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        async with self.sessions() as session:
            if not await self._exclusive(session):
                return 0  # another instance of this service is relaying this batch
            rows = (
                await session.exec(
                    select(OutboxMessage)
                    .where(col(OutboxMessage.published_at).is_(None))
                    .order_by(col(OutboxMessage.id))
                    .limit(self.batch)
                )
            ).all()
            if not rows:
                return 0
            await self.publish([(row.topic, row.key, row.payload.encode()) for row in rows])
            published_at = utcnow()
            for row in rows:
                row.published_at = published_at
                session.add(row)
            await session.commit()
        self.published += len(rows)
        log.debug("outbox published", count=len(rows))
        return len(rows)


def decode_envelope(raw: bytes | None) -> Envelope:
    if raw is None:
        raise ValueError("empty record value")
    return Envelope.model_validate(json.loads(raw))
