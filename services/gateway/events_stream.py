"""The live event stream for dashboards: every topic, read-only, fanned out to connected clients.

A plain aiokafka consumer WITHOUT a consumer group is assigned every partition of Gantry's topics:
it never commits and never takes partitions from the services. Each connected client has a bounded
queue; a client too slow to keep up loses its oldest events and is told so (``event: lagged``).
The last events are kept in a bounded buffer for ``GET /events/recent`` and the board's chains, and
the last dead letters in one of their own (so a busy bus never pushes them out); both are filled from
the topics' tails at start, so a restarted gateway still shows what happened.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from fastapi import Depends

from shared.bus import stop_consumer
from shared.events import ALL_TOPICS
from shared.kafka_admin import ready_partitions
from shared.kafka_transport import AdaptiveWait
from shared.logging import get_logger
from shared.service import Part, Runtime

log = get_logger(__name__)

RECENT = 1000  # events kept (and read back per partition at start)
DEAD_LETTERS = 500
CLIENT_QUEUE = 256
KEEP_ALIVE_SECONDS = 15.0
# What people watch can wait longer for its events than a service's hop: this consumer's fetches
# name every partition of every topic (dead-letter topics too), and the embedded broker's work for
# a fetch grows with the partitions it names. At least these waits, whatever the services' are; a
# dashboard sees an event at most a quarter of a second late.
STREAM_WAIT_MS = 250
STREAM_IDLE_WAIT_MS = 1000
# ... and Apache Kafka answers a fetch as soon as it has this much (1 byte by default: a fetch per
# record, each costing the gateway and the broker CPU); with more asked for, it holds the fetch
# for the wait above, as the embedded broker always does.
STREAM_FETCH_MIN_BYTES = 256 * 1024
TOPICS_PATIENCE = 30.0


@dataclass(frozen=True, order=True)
class StreamItem:
    timestamp: int
    topic: str
    partition: int
    offset: int
    key: str | None = field(compare=False)
    raw: bytes = field(compare=False, repr=False)  # the record's value, read as JSON only when shown

    @classmethod
    def from_record(cls, record: ConsumerRecord[bytes, bytes]) -> StreamItem:
        key = record.key.decode(errors="replace") if record.key is not None else None
        return cls(record.timestamp, record.topic, record.partition, record.offset, key, record.value or b"")

    @cached_property
    def event(self) -> Any:
        """The envelope (or dead-letter record) as JSON: decoded when a client is shown it, not for
        every record the gateway reads (most are only kept among the recent ones, then dropped)."""
        try:
            return json.loads(self.raw)
        except ValueError:
            return {"undecodable": self.raw.decode(errors="replace")}

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "key": self.key,
            "event": self.event,
        }

    def as_sse(self) -> str:
        data = json.dumps(self.event, separators=(",", ":"), ensure_ascii=False)
        return f"id: {self.topic}:{self.partition}:{self.offset}\nevent: {self.topic}\ndata: {data}\n\n"


_CLOSED = object()


class ClientQueue:
    """One client's bounded queue: when full, the oldest event makes room and is counted."""

    def __init__(self, topics: frozenset[str], size: int = CLIENT_QUEUE) -> None:
        self.topics = topics
        self.size = size
        # One slot more than the events may use, so the end-of-stream mark always fits.
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=size + 1)
        self.dropped = 0

    def wants(self, item: StreamItem) -> bool:
        return not self.topics or item.topic in self.topics

    def offer(self, item: StreamItem) -> None:
        if self._queue.qsize() >= self.size:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    async def put(self, item: StreamItem) -> None:
        await self._queue.put(item)

    def close(self) -> None:
        if self._queue.full():  # only a replaying client fills the last slot; it is ending anyway
            self._queue.get_nowait()
        self._queue.put_nowait(_CLOSED)

    async def frames(self) -> AsyncIterator[str]:
        """SSE frames until closed: events, lag notices and keep-alive comments."""
        yield f"retry: 3000\n: connected {uuid.uuid4().hex[:8]}\n\n"
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), KEEP_ALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if self.dropped:
                lost, self.dropped = self.dropped, 0
                yield f'event: lagged\ndata: {{"dropped": {lost}}}\n\n'
            if item is _CLOSED:
                return
            assert isinstance(item, StreamItem)
            yield item.as_sse()


def _consumer(bootstrap: str, fetch_wait_ms: int) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=fetch_wait_ms,
        fetch_min_bytes=STREAM_FETCH_MIN_BYTES,
        client_id=f"gantry-gateway-events-{uuid.uuid4().hex[:6]}",
    )


async def _assigned_consumer(
    bootstrap: str, fetch_wait_ms: int, topics: Iterable[str], patience: float = TOPICS_PATIENCE
) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started consumer assigned every partition of ``topics``.

    Topics created a moment ago (at the service's start) may have no leader yet: they are looked
    up again until all are ready or ``patience`` runs out.
    """
    wanted = list(dict.fromkeys(topics))
    deadline = time.monotonic() + patience
    while True:
        partitions, missing = await ready_partitions(bootstrap, wanted)
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    if missing:
        log.warning("topics not ready, their events are not streamed", topics=missing)
    consumer = _consumer(bootstrap, fetch_wait_ms)
    await consumer.start()
    consumer.assign(partitions)
    return consumer, partitions


class EventStream:
    """The shared consumer, the recent buffer and the connected clients."""

    def __init__(
        self, bootstrap: str, fetch_wait_ms: int, *, recent: int = RECENT, idle_wait_ms: int | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.fetch_wait_ms = fetch_wait_ms
        self._wait = AdaptiveWait(fetch_wait_ms, idle_wait_ms)  # an idle gateway sleeps too
        self.recent_size = recent
        self._recent: list[StreamItem] = []
        self._dead: list[StreamItem] = []
        self._clients: set[ClientQueue] = set()
        self._replaying: set[ClientQueue] = set()
        self._live_from: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        consumer, partitions = await _assigned_consumer(self.bootstrap, self.fetch_wait_ms, ALL_TOPICS)
        self._consumer = consumer
        if partitions:
            starts = await consumer.beginning_offsets(partitions)
            self._live_from = await consumer.end_offsets(partitions)
            for tp in partitions:  # the tails fill the recent buffer; live begins at the end
                consumer.seek(tp, max(starts[tp], self._live_from[tp] - self.recent_size))
        self._task = asyncio.create_task(self._pump(), name="gateway-event-stream")
        log.info("event stream started", partitions=len(partitions))

    async def stop(self) -> None:
        self.close_clients()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await stop_consumer(self._consumer, "the event stream")

    @property
    def clients(self) -> int:
        return len(self._clients) + len(self._replaying)

    def subscribe(self, topics: frozenset[str]) -> ClientQueue:
        client = ClientQueue(topics)
        self._clients.add(client)
        return client

    def unsubscribe(self, client: ClientQueue) -> None:
        self._clients.discard(client)

    def close_clients(self) -> None:
        """End every client's stream (the server is shutting down)."""
        for client in [*self._clients, *self._replaying]:
            client.close()

    def close_clients_threadsafe(self) -> None:
        """``close_clients`` from a signal handler or another thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.close_clients)

    def recent(self, topics: frozenset[str], limit: int) -> list[dict[str, Any]]:
        """The newest events, oldest first, optionally of some topics only."""
        chosen = [item for item in self._recent if not topics or item.topic in topics]
        return [item.as_json() for item in chosen[-limit:]]

    def history(self) -> list[StreamItem]:
        """Every event kept, oldest first."""
        return list(self._recent)

    def dead_letters(self) -> list[StreamItem]:
        """The dead letters kept, oldest first."""
        return list(self._dead)

    def accept(self, item: StreamItem, *, live: bool = True) -> None:
        bisect.insort(self._recent, item)
        del self._recent[: -self.recent_size]
        if item.topic.endswith(".dlq"):
            bisect.insort(self._dead, item)
            del self._dead[:-DEAD_LETTERS]
        if live:
            for client in self._clients:
                if client.wants(item):
                    client.offer(item)

    async def _pump(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=1000, max_records=500)
                self._wait.saw(self._consumer, bool(batch))
            except (KafkaError, OSError) as exc:  # the broker went away: the dashboard waits
                log.warning("event stream fetch failed, retrying", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            for tp, records in batch.items():
                live_from = self._live_from.get(tp, 0)
                for record in records:
                    self.accept(StreamItem.from_record(record), live=record.offset >= live_from)

    @asynccontextmanager
    async def replay(self, topics: frozenset[str]) -> AsyncIterator[ClientQueue]:
        """A client of its own reading from the beginning of the topics, then on, live."""
        client = ClientQueue(topics)
        consumer, partitions = await _assigned_consumer(
            self.bootstrap, self.fetch_wait_ms, sorted(topics) or ALL_TOPICS, patience=0
        )
        self._replaying.add(client)
        task: asyncio.Task[None] | None = None
        try:
            if partitions:
                await consumer.seek_to_beginning(*partitions)
            task = asyncio.create_task(_feed(consumer, client), name="gateway-event-replay")
            yield client
        finally:
            self._replaying.discard(client)
            if task is not None:
                task.cancel()
            await stop_consumer(consumer, "an event replay")


async def _feed(consumer: AIOKafkaConsumer, client: ClientQueue) -> None:
    while True:
        batch = await consumer.getmany(timeout_ms=1000, max_records=200)
        for records in batch.values():
            for record in records:
                await client.put(StreamItem.from_record(record))


EVENTS: Part[EventStream] = Part("events")  # the gateway's one shared consumer of every topic
EventsDep = Annotated[EventStream, Depends(EVENTS)]


@asynccontextmanager
async def event_stream(runtime: Runtime) -> AsyncIterator[None]:
    """Start the shared consumer with the service, stop it (and end every stream) on stop."""
    settings = runtime.settings
    stream = EventStream(
        settings.require_bootstrap(),
        max(settings.kafka_fetch_max_wait_ms, STREAM_WAIT_MS),
        idle_wait_ms=max(settings.kafka_fetch_idle_wait_ms or 0, STREAM_IDLE_WAIT_MS),
    )
    await stream.start()
    EVENTS.provide(runtime, stream)
    try:
        yield
    finally:
        await stream.stop()
