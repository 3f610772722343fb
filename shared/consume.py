"""Consuming in batches: what one fetch returned, applied in one transaction, acknowledged once.

``take_ready`` hands a faust agent the events that are already there (up to a bound) as soon as
one arrives: no timer, so an idle agent sleeps, and a busy one takes what the fetch brought.
``apply_batch`` applies them in order in one transaction (``UnitOfWork.batch``): each use case is
a savepoint, so an event that is poison or keeps failing rolls back alone and goes to the
dead-letter topic, while the rest of its batch commits. An outage (database or broker away, or a
deadlock another instance caused) rolls the whole batch back and tries it again after a pause:
the inbox, read afresh each time, makes that harmless. The events are acknowledged after the
commit, and faust commits their offsets together.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import EventT
from sqlalchemy.exc import DBAPIError

from shared import metrics, tracing
from shared.batches import Batch, BatchConflict, FollowUp, SpoiledBatch
from shared.bus import (
    OUTAGE_MAX_DELAY,
    PREFETCH,
    Handler,
    OutsideWork,
    Prefetch,
    Producer,
    apply_with_retries,
    is_transient,
)
from shared.errors import PoisonEvent
from shared.events import Envelope
from shared.logging import bind_event, get_logger, unbind_event
from shared.outbox import UnitOfWork, decode_envelope

log = get_logger(__name__)
RESTART_STATES = frozenset({"40001", "40P01"})  # PostgreSQL: serialization failure, deadlock
# A batch whose use cases find their rows read ahead runs without awaiting anything: without a
# pause, 500 hooks held versioning's event loop (and its webhook door) for about 150 ms.
YIELD_EVERY_SECONDS = 0.005


@dataclass
class Record:
    key: bytes | None
    raw: bytes | None
    envelope: Envelope | None = None
    dead: str | None = None  # why it goes to the dead-letter topic
    headers: Headers | None = None  # the trace context it carries


async def take_ready(stream: faust.StreamT[Any], max_events: int) -> AsyncIterator[list[EventT[Any]]]:
    """Yield the events already delivered to ``stream`` (at most ``max_events``) whenever there is
    at least one, and acknowledge them once the caller is done with them (faust's ``take_events``
    without its timer: it waits for the first event, not for a deadline)."""
    buffer: list[EventT[Any]] = []
    arrived, room = asyncio.Event(), asyncio.Event()
    room.set()

    async def add(value: Any) -> Any:
        while len(buffer) >= max_events:
            room.clear()
            await room.wait()
        event = stream.current_event
        if event is None:
            raise RuntimeError("a batch found no current event")
        buffer.append(event)
        arrived.set()
        return value

    acks, stream.enable_acks = stream.enable_acks, False  # acknowledged here, after the batch
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))  # type: ignore[attr-defined]  # as take_events does
    try:
        while not stream.should_stop:
            if await stream.wait_for_stopped(arrived):  # type: ignore[attr-defined]
                break
            await _settle(buffer, max_events)
            batch = buffer[:max_events]
            del buffer[: len(batch)]
            if not buffer:
                arrived.clear()
            try:
                yield batch
            finally:
                for event in batch:
                    await stream.ack(event)
                room.set()
    finally:
        stream.enable_acks = acks
        stream._processors.remove(add)  # type: ignore[attr-defined]


async def _settle(buffer: list[EventT[Any]], max_events: int) -> None:
    """Let the rest of the records one fetch delivered reach the buffer (a few loop turns, no timer)."""
    size = -1
    while size != len(buffer) and len(buffer) < max_events:
        size = len(buffer)
        await asyncio.sleep(0)


Headers = Sequence[tuple[str, bytes]] | Mapping[str, bytes]
RawRecord = tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, Headers | None]  # key, value, headers


async def handle_batch(
    topic: str,
    events: Sequence[RawRecord],
    handler: Handler,
    producer: Producer,
    uow: UnitOfWork,
    outside: OutsideWork | None = None,
) -> None:
    """Apply a batch of records of ``topic``; send the undecodable, the poison and the failed to
    ``<topic>.dlq`` once the rest committed. Never raises but for cancellation. ``outside`` (a
    handler's work outside the database) is done before the transaction and after the commit.

    The batch is first applied without savepoints (the common case: nothing fails, two statements
    per event saved); if anything fails in it, it is rolled back and applied again with a
    savepoint per event, which tells the failing event from the rest."""
    started = time.monotonic()
    records = [_decoded(*event) for event in events]
    async with outside.turn() if outside is not None else contextlib.nullcontext():
        await _handle_records(topic, records, handler, producer, uow, outside)
    metrics.observe_batch(topic, metrics.FETCHED, len(records), time.monotonic() - started)


async def _handle_records(
    topic: str,
    records: list[Record],
    handler: Handler,
    producer: Producer,
    uow: UnitOfWork,
    outside: OutsideWork | None,
) -> None:
    if uow.applied_here:  # the copies of events applied here in the batch that emitted them, or after it
        records = [r for r in records if r.envelope is None or r.envelope.id not in uow.applied_here]
        if not records:
            return
    if outside is not None:
        await _outside(outside.before, [record.envelope for record in records if record.envelope is not None])
    attempt, careful = 0, False
    while True:
        attempt += 1
        try:
            followed = await apply_batch(uow, records, handler, careful=careful, topic=topic)
            break
        except Exception as exc:
            if not careful and not is_transient(exc):
                careful = True  # again at once, each event in a savepoint of its own
                continue
            # careful, a use case's own failure was dealt with inside: what comes out is the
            # database or the broker (away, starting up, a conflict), waited out like an outage
            delay = min(OUTAGE_MAX_DELAY, 0.25 * 2 ** min(attempt, 7))
            log.warning("batch rolled back, will try it again", topic=topic, error=repr(exc), retry_in=delay)
            await asyncio.sleep(delay)
    for record in records:
        if record.dead is not None:
            await producer.dead_letter(topic, record.key, record.raw, record.dead)
            metrics.count_dead_lettered(topic, record.dead.split(":", 1)[0].replace("failed after retries", "failed"))
        elif record.envelope is not None:
            metrics.observe_handled(topic, record.envelope)
    for done in followed:
        metrics.observe_handled(done.topic, done.envelope)
    if outside is not None:
        applied = [record.envelope for record in records if record.envelope is not None and record.dead is None]
        await _outside(outside.after, applied)


async def _outside(work: Callable[[list[Envelope]], Awaitable[None]], envelopes: list[Envelope]) -> None:
    """A handler's work outside the database; a failure is logged, the batch goes on (``OutsideWork``)."""
    try:
        await work(envelopes)
    except Exception:
        log.exception("work outside the database failed", step=getattr(work, "__name__", "?"), events=len(envelopes))


async def apply_handed_on(
    handed: Sequence[FollowUp], handler: Handler, uow: UnitOfWork, outside: OutsideWork | None = None
) -> list[Envelope]:
    """Apply events this service emitted (in a batch, or a use case's own transaction) and handed
    on once they committed (``UnitOfWork.hand_on``), as their topic's batch would: ``outside.before``, one transaction,
    ``outside.after`` (the caller holds ``outside.turn()``). Tried once: an event that is poison or
    fails, or a batch that fails, is left to its copy from the topic (retried, dead-lettered, as any
    event of it), nothing is sent to a dead-letter topic from here. The events applied (or found
    applied) are returned, and their copies from the topic skipped (``uow.applied_here``)."""
    records = [
        Record(None, None, done.envelope, headers=tracing.stored_headers(done.context))
        for done in handed
        if done.envelope.id not in uow.applied_here
    ]
    if not records:
        return []
    started, topic = time.monotonic(), handed[0].topic
    if outside is not None:
        await _outside(outside.before, [record.envelope for record in records if record.envelope is not None])
    try:
        await apply_batch(uow, records, handler, careful=False, topic=topic)
    except Exception as exc:  # noqa: BLE001  # their copies from the topic apply them, with retries
        log.warning(
            "events handed on after their commit failed; their copies from the topic apply them",
            topic=topic,
            events=len(records),
            error=repr(exc),
        )
        return []
    applied = [record.envelope for record in records if record.envelope is not None and record.dead is None]
    uow.applied_here.add(envelope.id for envelope in applied)
    for envelope in applied:
        metrics.observe_handled(topic, envelope)
    if outside is not None:
        await _outside(outside.after, applied)
    metrics.observe_batch(topic, metrics.HANDED_ON, len(records), time.monotonic() - started)
    return applied


def _decoded(key: bytes | None, raw: bytes | None, headers: Headers | None = None) -> Record:
    try:
        return Record(key, raw, decode_envelope(raw), headers=headers)
    except ValueError as exc:
        log.error("undecodable event sent to the dead-letter topic", error=str(exc))
        return Record(key, raw, dead=f"undecodable: {exc}", headers=headers)


async def apply_batch(
    uow: UnitOfWork, records: list[Record], handler: Handler, *, careful: bool = True, topic: str = ""
) -> list[FollowUp]:
    """Apply ``records`` in order in one transaction; mark which go to the dead-letter topic.
    Not ``careful`` (no savepoints), the first failure raises ``SpoiledBatch``. Then the events
    they emitted on a topic the service folds (``shared.bus.folded``): those applied are returned."""
    envelopes = [record.envelope for record in records if record.envelope is not None]
    async with uow.batch((envelope.id for envelope in envelopes), careful=careful) as batch:
        prefetch: Prefetch | None = getattr(handler, PREFETCH, None)
        if prefetch is not None and envelopes:
            batch.kept = await _prefetched(prefetch, batch.session, envelopes)
        turn = time.monotonic()
        for record in records:
            if record.envelope is None:
                continue
            if time.monotonic() - turn > YIELD_EVERY_SECONDS:
                await asyncio.sleep(0)  # let the rest of the service (its webhook door) have the loop
                turn = time.monotonic()
            record.dead = None  # tried again after a rollback: decided afresh
            bind_event(record.envelope)
            try:
                with tracing.consumer_span(topic, record.headers):
                    if careful:
                        await apply_with_retries(record.envelope, handler, wait_out_outages=False)
                    else:
                        await _apply_once(record.envelope, handler, batch.spoiled)
            except PoisonEvent as exc:
                log.error("poison event sent to the dead-letter topic", reason=str(exc))
                record.dead = f"poison: {exc}"
            except Exception as exc:
                if restarts_batch(exc) or not careful:
                    raise
                log.exception("event failed after retries; sent to the dead-letter topic")
                record.dead = f"failed after retries: {exc!r}"
            finally:
                unbind_event()
            if batch.spoiled():
                raise SpoiledBatch("a use case failed inside the batch")
        await _follow_up(batch)
        await batch.session.flush()  # what the use cases left pending fails here, not at the commit
    log.debug("batch applied", events=len(envelopes), applied=len(batch.claims), careful=careful)
    return batch.followed


async def _follow_up(batch: Batch) -> None:
    """Apply the events the batch emitted on a topic its service folds, in the order emitted,
    each topic's read ahead first (``shared.bus.with_prefetch``), each in a use case of its own;
    and what those emitted in turn. One that fails is left to its copy from the topic (which
    retries it, then dead-letters it, as any event of its topic); without savepoints, a failure
    spoils the batch, which is applied again with them."""
    while batch.follow_ups:
        follow_ups, batch.follow_ups = batch.follow_ups, []
        for topic in dict.fromkeys(follow_up.topic for follow_up in follow_ups):
            prefetch: Prefetch | None = getattr(batch.folds[topic], PREFETCH, None)
            envelopes = [follow_up.envelope for follow_up in follow_ups if follow_up.topic == topic]
            if prefetch is not None:
                batch.kept = [*batch.kept, *await _prefetched(prefetch, batch.session, envelopes)]
        for follow_up in follow_ups:
            bind_event(follow_up.envelope)
            try:
                with tracing.consumer_span(follow_up.topic, tracing.stored_headers(follow_up.context)):
                    await batch.folds[follow_up.topic](follow_up.envelope)
            except Exception as exc:
                if restarts_batch(exc):
                    raise
                if not batch.careful:
                    raise SpoiledBatch("an event applied in the batch that emitted it failed") from exc
                log.warning(
                    "event applied in the batch that emitted it failed; its copy from the topic applies it",
                    topic=follow_up.topic,
                    error=repr(exc),
                )
                continue
            finally:
                unbind_event()
            batch.followed.append(follow_up)


async def _prefetched(prefetch: Prefetch, session: Any, envelopes: list[Envelope]) -> Sequence[object]:
    """The rows read ahead for a batch. A failure of the database is the batch's (PostgreSQL
    refuses the rest of a transaction after one): it rolls back and is tried again, as for an
    outage. Any other failure leaves nothing read ahead: each use case reads its own rows."""
    try:
        return await prefetch(session, envelopes)
    except Exception as exc:
        if isinstance(exc, DBAPIError) or restarts_batch(exc):
            raise
        log.exception("reading ahead for a batch failed; its events read their own rows")
        return ()


async def _apply_once(envelope: Envelope, handler: Handler, spoiled: Callable[[], bool]) -> None:
    """Without savepoints: a poison event refused before it wrote anything is set aside; any other
    failure spoils the batch (``SpoiledBatch``), which is then applied again carefully."""
    try:
        await handler(envelope)
    except PoisonEvent:
        if spoiled():
            raise SpoiledBatch("a use case failed inside the batch") from None
        raise


def restarts_batch(exc: BaseException) -> bool:
    """An outage, or a conflict the whole transaction must retry: a deadlock or serialization
    failure, or an inbox insert that met another instance's (the next try skips what it applied)."""
    if is_transient(exc) or isinstance(exc, BatchConflict):
        return True
    state = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(getattr(exc, "orig", None), "pgcode", None)
    return isinstance(exc, DBAPIError) and state in RESTART_STATES
