"""The service's connection to Kafka: a faust app for its agents, a producer for its outbox.

Agents stay thin: decode the envelope, bind the log context, call the use case. An event that
cannot be decoded, or that the use case declares poison, goes to ``<topic>.dlq`` with the reason.
An outage (database or broker unreachable) is waited out with back-off: the partition waits and
nothing is dead-lettered. Any other failure is retried a few times and then dead-lettered, so one
bad event never blocks a partition forever and is never silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from sqlalchemy import bindparam, inspect
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import metrics, tracing
from shared.batches import held_rows, index_rows, indexed_already, note_absent
from shared.db import serialize_on_all
from shared.errors import PoisonEvent
from shared.events import DataT, Envelope, utcnow
from shared.logging import bind_event, get_logger, unbind_event
from shared.outbox import HeldBack, UnitOfWork, decode_envelope
from shared.settings import Settings

log = get_logger(__name__)

Handler = Callable[[Envelope], Awaitable[object]]
ONE_AT_A_TIME = "gantry_one_at_a_time"
OUTSIDE_WORK = "gantry_outside_work"
PREFETCH = "gantry_prefetch"
FOLDED = "gantry_folded"
# Loads, for a whole batch, the rows its use cases will look up by primary key; returns them.
Prefetch = Callable[[AsyncSession, list[Envelope]], Awaitable[Sequence[object]]]


class OutsideWork(Protocol):
    """What a batched handler does outside the database, around its batch's transaction."""

    async def before(self, envelopes: list[Envelope]) -> None:
        """Before the batch's transaction, on its decoded events (a cluster applied to, say). Must
        not raise: what cannot be done here is left to the handler, in the transaction."""

    async def after(self, envelopes: list[Envelope]) -> None:
        """Once the batch committed, on the events it applied (none dead-lettered)."""

    def turn(self) -> contextlib.AbstractAsyncContextManager[object]:
        """Held around a whole batch, ``before`` to ``after``: one batch at a time acts outside the
        database (the topic's, or one handed on after the commit that emitted it)."""


@dataclass(frozen=True)
class Batches:
    """How a service's agents take their events: up to ``max_events`` per transaction of ``uow``."""

    uow: UnitOfWork
    max_events: int = 500


RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
OUTAGE_MAX_DELAY = 30.0
STOP_TIMEOUT = 5.0


def _register_transport() -> None:
    from faust.transport.drivers import TRANSPORTS

    TRANSPORTS.aliases.setdefault("gantry", "shared.kafka_transport:Transport")


def consumer_group(service: str, settings: Settings) -> str:
    """The service's consumer group (also its faust app id): ``<GANTRY_KAFKA_GROUP_PREFIX>-<service>``."""
    return f"{settings.kafka_group_prefix}-{service}"


def make_faust_app(service: str, settings: Settings) -> faust.App:
    """A faust app tuned for quick start-up: no web server, no leader topic, short rebalances."""
    _register_transport()
    bootstrap = settings.require_bootstrap()
    datadir = settings.home / "faust" / service
    datadir.parent.mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    app = faust.App(
        consumer_group(service, settings),
        broker=[f"gantry://{server}" for server in bootstrap.split(",")],
        web_enabled=False,
        autodiscover=False,
        topic_disable_leader=True,
        topic_partitions=settings.kafka_partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=heartbeat_interval(settings),
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_ms / 1000,
        broker_commit_interval=0.5,
        stream_wait_empty=False,
        store="memory://",
        datadir=str(datadir),
    )
    app.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms  # type: ignore[attr-defined]  # read by the transport
    app.fetch_idle_wait_ms = settings.kafka_fetch_idle_wait_ms  # type: ignore[attr-defined]
    app.fetch_sleep_wait_ms = settings.kafka_fetch_sleep_wait_ms  # type: ignore[attr-defined]
    return app


def heartbeat_interval(settings: Settings) -> float:
    """Seconds between a consumer's heartbeats: ``GANTRY_KAFKA_HEARTBEAT_INTERVAL_MS`` when set,
    else a third of the session timeout, at most 3 s (Kafka's rule)."""
    if settings.kafka_heartbeat_interval_ms is not None:
        return settings.kafka_heartbeat_interval_ms / 1000
    return min(3.0, settings.kafka_session_timeout_ms / 3_000)


PARTITION_BATCH_BYTES = 256 * 1024  # far below the brokers' 1 MiB limit on one batch


class Producer:
    """acks=all, idempotent where the broker supports it; sends a batch and awaits every ack.

    A broker that refuses idempotent producers (the embedded one does) is detected at start: the
    producer warns, says which setting silences the warning, and goes on without idempotence
    (acks=all still; the consumers' inbox absorbs a duplicate a retry may make)."""

    def __init__(self, settings: Settings, *, service: str | None = None) -> None:
        self.settings = settings
        self.service = service  # named in the dead letters it writes: which consumer gave up
        self.idempotent = settings.kafka_idempotence
        self._producer = self._make(self.idempotent)
        self.started = False

    def _make(self, idempotent: bool) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.require_bootstrap(),
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=0,
            # A partition's batch holds this much while the one before it is in flight; a send
            # that finds it full waits for the drain, and the waiters race, so with aiokafka's
            # 16 KiB a busy key (many hooks of one repository) saw seconds-long tails.
            max_batch_size=PARTITION_BATCH_BYTES,
            max_request_size=self.settings.kafka_max_message_bytes,
        )

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            if not self.idempotent or isinstance(exc, KafkaConnectionError):
                raise
            await self._producer.stop()
            log.warning(
                "the Kafka broker refuses idempotent producers; going on without idempotence "
                "(set GANTRY_KAFKA_IDEMPOTENCE=false for this broker to start without trying)",
                bootstrap=self.settings.kafka_bootstrap,
                error=repr(exc),
            )
            self.idempotent = False
            self._producer = self._make(False)
            await self._producer.start()
        self.started = True

    async def stop(self) -> None:
        """Flush and close; with the broker gone, give up after ``STOP_TIMEOUT`` seconds (what was
        not acknowledged is still in the outbox, or was answered 503 at the webhook door)."""
        self.started = False
        await stop_within(self._producer.stop(), "the producer")

    async def send_batch(self, records: list[tuple[str, str, bytes]]) -> list[BaseException | None]:
        """Send every record, then wait for each answer: None when acknowledged, else the error.
        A record the producer refuses before sending (too large, say) holds back the records of
        its key behind it, so a key's records never overtake one another."""
        pending: list[asyncio.Future[object] | BaseException] = []
        refused: set[str] = set()
        for record in records:
            topic, key, value = record
            if key in refused:
                pending.append(HeldBack(key))
                continue
            headers = getattr(record, "headers", None) or None
            try:
                pending.append(await self._producer.send(topic, value=value, key=key.encode(), headers=headers))
            except KafkaError as exc:
                pending.append(exc)
                refused.add(key)
        return [item if isinstance(item, BaseException) else await _outcome(item) for item in pending]

    async def send_and_wait(self, topic: str, key: str, value: bytes, headers: tracing.Headers | None = None) -> None:
        await self._producer.send_and_wait(topic, value=value, key=key.encode(), headers=headers or None)

    async def dead_letter(self, topic: str, key: bytes | None, raw: bytes | None, reason: str) -> None:
        record = {
            "failed_at": utcnow().isoformat(),
            "topic": topic,
            "consumer": self.service,
            "reason": reason,
            "value": raw.decode(errors="replace") if raw is not None else None,
        }
        await self._producer.send_and_wait(f"{topic}.dlq", json.dumps(record).encode(), key=key)


async def stop_within(closing: Awaitable[object], what: str) -> bool:
    """Close a Kafka client without hanging or failing the shutdown when the broker is gone:
    give up after ``STOP_TIMEOUT`` seconds. (aiokafka's consumer re-raises the cancellation of its
    own fetch tasks from ``stop()``; only a cancellation of the caller itself goes on.) Whether it
    closed cleanly."""
    try:
        await asyncio.wait_for(closing, STOP_TIMEOUT)
        return True
    except asyncio.CancelledError:
        if being_cancelled():
            raise
        log.warning(f"{what} stopped without the broker")
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning(f"{what} stopped without the broker", error=repr(exc))
    return False


async def stop_consumer(consumer: AIOKafkaConsumer, what: str) -> None:
    """``stop_within`` for a consumer. Stopped while the broker is away, aiokafka's (0.14) leaves
    ``stop()`` before it closes its client, whose metadata task then stays pending: close it."""
    if not await stop_within(consumer.stop(), what):
        await close_client(consumer)


async def close_client(consumer: AIOKafkaConsumer) -> None:
    """Close the client of a consumer whose ``stop()`` failed part way (``stop_consumer``)."""
    client = getattr(consumer, "_client", None)
    if client is not None:
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            await asyncio.wait_for(client.close(), STOP_TIMEOUT)


def being_cancelled() -> bool:
    """Whether the running task itself is being cancelled, rather than having met the
    ``CancelledError`` of a task it awaited (as aiokafka's consumer ``stop()`` passes on)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _outcome(future: asyncio.Future[object]) -> BaseException | None:
    try:
        await future
    except KafkaError as exc:
        failure: BaseException = exc
        return failure
    return None


# The most events in one batch of a handler with work outside the database: that work (a cluster
# applied to) takes far longer per event than a transaction's statements, and every event of a
# batch waits for all of it. At 500, one batch of deploy requests kept chains from completing for
# 16 s on a saturated 2-core machine.
OUTSIDE_WORK_BATCH_MAX = 50


def with_outside_work(work: OutsideWork, handler: Handler) -> Handler:
    """Mark a batched handler that acts outside the database: ``work.before`` gets each batch's
    events before its transaction (outside any transaction, so a slow cluster holds no lock), the
    handler records in the transaction what was done, and ``work.after`` follows the commit. Its
    batches hold at most ``OUTSIDE_WORK_BATCH_MAX`` events."""
    setattr(handler, OUTSIDE_WORK, work)  # noqa: B010
    return handler


def with_prefetch(prefetch: Prefetch, handler: Handler) -> Handler:
    """Mark a batched handler whose use cases look rows up by primary key (``session.get``):
    once its batch's transaction began, ``prefetch`` loads in a few statements the rows all of the
    batch's events will look up, and each ``session.get`` then finds its row in the session
    without a statement of its own (a row that was not there is looked for as before). The rows
    are read in the batch's transaction, after its write lock: the state each event would have
    read. The batch keeps what ``prefetch`` returns (a session holds its rows only weakly)."""
    setattr(handler, PREFETCH, prefetch)  # noqa: B010
    return handler


def folded(handler: Handler) -> Handler:
    """Mark a batched handler of a topic its own service emits (a self-loop, ADR 3): an event of
    that topic emitted by one of the service's batches is applied in that same batch, after the
    batch's own events (``shared.consume.apply_batch``), each in a use case of its own as its
    topic's batch would apply it. It is still published, for every other reader; its copy from
    the topic finds it applied. One that fails there is left to its copy from the topic, retried
    and dead-lettered as any event of it. Events of the topic emitted elsewhere (a REST request's
    transaction) go round through the broker as before."""
    setattr(handler, FOLDED, True)  # noqa: B010
    return handler


def readable_payloads(envelopes: Sequence[Envelope], model: type[DataT]) -> list[DataT]:
    """The typed data of each event that has it (for a ``Prefetch``: a poison event is the
    handler's to refuse, in the batch)."""
    return [data for _, data in readable_events(envelopes, model)]


def readable_events(envelopes: Sequence[Envelope], model: type[DataT]) -> list[tuple[Envelope, DataT]]:
    """Each event that has typed data, with it (``readable_payloads``, for a ``Prefetch`` that also
    reads the envelope: its time, say)."""
    found = []
    for envelope in envelopes:
        try:
            found.append((envelope, envelope.payload(model)))
        except PoisonEvent:
            continue
    return found


def read_ahead(model: type[SQLModel], data: type[DataT], *, locked: bool = False, **columns: str) -> Prefetch:
    """A ``Prefetch`` of the rows of ``model`` whose columns hold what a batch's events name, in
    one statement: ``read_ahead(ServiceRun, DeployStatus, service_id="service_id",
    environment="environment")`` reads the runs whose service is one of the batch's statuses'
    and whose environment is one of theirs (each column keyed by the data's attribute). When the
    columns are the model's primary key, in its order, the keys the events name and no row has
    are noted absent (``shared.batches.note_absent``): ``get_row`` answers them without a statement,
    and keys whose rows the session already holds as read are not read again (``held_rows``);
    other columns index the rows read (``shared.batches.index_rows``): ``first_row`` and
    ``indexed`` answer look-ups by those columns without a statement, under SQLite's write lock, or
    on PostgreSQL when ``locked`` says the batch took the locks the rows' writers take; values the
    batch's index covers already are not read again (``indexed_already``)."""
    primary_key = [column.key for column in inspect(model).primary_key]
    by_key = list(columns) == primary_key
    # built once, each column's values bound at each batch (ADR 12: a statement built at each call
    # costs about twice as much CPU as one built once)
    names = {column: f"ahead_{column}" for column in columns}
    statement = select(model).where(
        *(col(getattr(model, column)).in_(bindparam(name, expanding=True)) for column, name in names.items())
    )

    async def prefetch(session: AsyncSession, envelopes: list[Envelope]) -> Sequence[object]:
        payloads = readable_payloads(envelopes, data)
        if not payloads:
            return []
        if by_key:
            named = {_key(payload, columns.values()) for payload in payloads}
            held = held_rows(session, model, named)  # a batch's folded events name what its own read
            if not (wanted := named - held.keys()):
                return list(held.values())
            keys = [key if isinstance(key, tuple) else (key,) for key in wanted]
            values = {names[column]: list({key[n] for key in keys}) for n, column in enumerate(columns)}
            rows = list((await session.exec(statement, params=values)).all())
            note_absent(session, model, wanted - {_key(row, columns) for row in rows})
            return [*rows, *held.values()]
        by_column = {column: {getattr(payload, name) for payload in payloads} for column, name in columns.items()}
        if indexed_already(session, model, by_column):
            return []  # the batch's index has them, and the rows its use cases added since
        values = {names[column]: list(found) for column, found in by_column.items()}
        rows = list((await session.exec(statement, params=values)).all())
        index_rows(session, model, by_column, rows, locked=locked)
        return rows

    return prefetch


def lock_ahead(data: type[DataT], name: Callable[[DataT], str]) -> Prefetch:
    """A ``Prefetch`` that reads nothing: on PostgreSQL it takes, in one statement, the advisory
    lock ``name`` gives each event's data (``shared.db.serialize_on_all``), before the reads after
    it in ``reading_ahead``. For a ``read_ahead(..., locked=True)`` of rows whose every writer takes
    that lock (``shared.db.serialize_on``); each event asking for its own again finds it held."""

    async def prefetch(session: AsyncSession, envelopes: list[Envelope]) -> Sequence[object]:
        await serialize_on_all(session, [name(payload) for payload in readable_payloads(envelopes, data)])
        return []

    return prefetch


def _key(holder: object, attributes: Iterable[str]) -> object:
    """A primary key as ``Session.get`` takes it: the value alone, or a tuple of several."""
    values = tuple(getattr(holder, attribute) for attribute in attributes)
    return values[0] if len(values) == 1 else values


def reading_ahead(*prefetches: Prefetch) -> Prefetch:
    """Several ``Prefetch`` in turn, their rows kept together."""

    async def prefetch(session: AsyncSession, envelopes: list[Envelope]) -> Sequence[object]:
        return [row for each in prefetches for row in await each(session, envelopes)]

    return prefetch


def batch_limit(handler: Handler, batches: Batches) -> int:
    """The most events ``handler`` takes in one batch: the service's bound, and at most
    ``OUTSIDE_WORK_BATCH_MAX`` for a handler with work outside the database."""
    if getattr(handler, OUTSIDE_WORK, None) is None:
        return batches.max_events
    return min(batches.max_events, OUTSIDE_WORK_BATCH_MAX)


def one_at_a_time(handler: Handler) -> Handler:
    """Mark a handler that must see each event in a transaction of its own, committed before the
    next: one that acts outside the database after its transaction (a cluster, say), reading back
    through other sessions what it just wrote. Others take their events in batches."""
    setattr(handler, ONE_AT_A_TIME, True)  # noqa: B010
    return handler


def subscribe(
    app: faust.App, topic: str, handler: Handler, producer: Producer, name: str, batches: Batches | None = None
) -> None:
    """Register a faust agent on ``topic`` that hands each envelope to ``handler``: in batches of
    up to ``batches.max_events`` in one transaction of ``batches.uow`` (``shared.consume``), or one
    at a time when no ``batches`` is given or the handler is marked ``one_at_a_time``."""
    from shared.consume import handle_batch, take_ready

    channel = app.topic(topic, key_serializer="raw", value_serializer="raw")
    batched = batches is not None and not getattr(handler, ONE_AT_A_TIME, False)
    if batches is not None and batched and getattr(handler, FOLDED, False):
        batches.uow.fold(str(topic), handler)

    async def agent(stream: faust.StreamT[Any]) -> None:
        if batches is not None and batched:
            outside = getattr(handler, OUTSIDE_WORK, None)
            async for events in take_ready(stream, batch_limit(handler, batches)):
                records = [(event.message.key, event.message.value, event.message.headers) for event in events]
                await handle_batch(topic, records, handler, producer, batches.uow, outside)
            return
        async for event in stream.events():
            message = event.message
            await handle_record(topic, message.key, message.value, handler, producer, message.headers)

    agent.__name__ = agent.__qualname__ = name
    app.agent(channel, name=name)(agent)


async def handle_record(
    topic: str,
    key: bytes | None,
    raw: bytes | None,
    handler: Handler,
    producer: Producer,
    headers: Any = None,
) -> None:
    """Decode, apply (in the trace the record's headers carry), time the hop; dead-letter what fails."""
    try:
        envelope = decode_envelope(raw)
    except ValueError as exc:
        log.error("undecodable event sent to the dead-letter topic", topic=topic, error=str(exc))
        await producer.dead_letter(topic, key, raw, f"undecodable: {exc}")
        metrics.count_dead_lettered(topic, "undecodable")
        return
    bind_event(envelope)
    try:
        with tracing.consumer_span(topic, headers):
            await apply_with_retries(envelope, handler)
        metrics.observe_handled(topic, envelope)
    except PoisonEvent as exc:
        log.error("poison event sent to the dead-letter topic", topic=topic, reason=str(exc))
        await producer.dead_letter(topic, key, raw, f"poison: {exc}")
        metrics.count_dead_lettered(topic, "poison")
    except Exception as exc:
        log.exception("event failed after retries; sent to the dead-letter topic", topic=topic)
        await producer.dead_letter(topic, key, raw, f"failed after retries: {exc!r}")
        metrics.count_dead_lettered(topic, "failed")
    finally:
        unbind_event()


def is_transient(exc: BaseException) -> bool:
    """An outage rather than a bad event: the database or broker is unreachable or restarting."""
    if isinstance(exc, OperationalError | InterfaceError | KafkaConnectionError | OSError | TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


async def apply_with_retries(envelope: Envelope, handler: Handler, *, wait_out_outages: bool = True) -> None:
    """Outages are waited out (the partition waits, nothing is dead-lettered), or raised at once
    when not ``wait_out_outages`` (a batch rolls back whole); any other error is retried a few
    times and then raised, so the event goes to the dead-letter topic."""
    attempt = 0
    while True:
        attempt += 1
        try:
            await handler(envelope)
            return
        except PoisonEvent:
            raise
        except Exception as exc:
            transient = is_transient(exc)
            if transient and not wait_out_outages or not transient and attempt > len(RETRY_DELAYS):
                raise
            delay = min(OUTAGE_MAX_DELAY, 0.5 * 2 ** min(attempt, 6)) if transient else RETRY_DELAYS[attempt - 1]
            log.warning(
                "event handling failed, retrying", attempt=attempt, transient=transient, error=repr(exc), retry_in=delay
            )
            await asyncio.sleep(delay)
