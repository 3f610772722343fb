"""What every Gantry service tells Prometheus at ``GET /metrics``.

Requests (duration by method, route template and status), the events a service consumes (records
behind per topic and partition, each event's hop from its own time and its whole chain from the
chain's first event, the batches they are applied in: how many events each, and how long each
took), its outbox (rows waiting, the oldest one's age, rows dead-lettered, rows each relay cycle
published), events it sent to a dead-letter topic, deploy's outcomes, and how long each garbage
collection held the process. Labels never carry a user, a token or an id: routes are templates
(``/api/deploy/deployments/{deployment_id}``), not the paths asked.

Counters and histograms count in the process; the gauges are read when Prometheus asks.
"""

from __future__ import annotations

import gc
import hmac
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import event, func
from sqlalchemy.ext.asyncio import AsyncSession as SaAsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel import col, select

from shared.errors import NotAuthenticated
from shared.events import Envelope, utcnow

if TYPE_CHECKING:
    import faust

    from shared.service import Runtime

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

REQUEST_SECONDS = Histogram(
    "gantry_http_request_duration_seconds",
    "HTTP requests answered, by method, route template and status: seconds until the answer began",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "gantry_consumer_lag_records",
    "Records in a consumed partition past the last one this instance read",
    ["topic", "partition"],
)
OUTBOX_PENDING = Gauge("gantry_outbox_pending_rows", "Outbox rows waiting to be published")
OUTBOX_OLDEST_AGE = Gauge(
    "gantry_outbox_oldest_pending_age_seconds", "Age of the oldest outbox row waiting to be published (0 when none)"
)
OUTBOX_DEAD_LETTERS = Gauge(
    "gantry_outbox_dead_letters", "Outbox rows dead-lettered, waiting for an org admin to retry or discard them"
)
DEAD_LETTERED = Counter(
    "gantry_events_dead_lettered_total",
    "Consumed events sent to <topic>.dlq, by topic and why: undecodable, poison or failed",
    ["topic", "reason"],
)
HOP_SECONDS = Histogram(
    "gantry_event_hop_seconds",
    "From an event's own time to this service having handled it, by topic",
    ["topic"],
    buckets=_LATENCY_BUCKETS,
)
CHAIN_SECONDS = Histogram(
    "gantry_event_chain_seconds",
    "From the first event of a chain (one correlation id) to this service having handled this event, by topic",
    ["topic"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_EVENTS = Histogram(
    "gantry_batch_events",
    "Events a consumer batch took, by topic and way: fetched from the topic, or handed on by the "
    "transaction of this service that emitted them (deploy's requests)",
    ["topic", "way"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)
BATCH_SECONDS = Histogram(
    "gantry_batch_seconds",
    "A consumer batch, by topic and way: seconds from taking its events to their having been applied "
    "(its work outside the database, a cluster's say, included)",
    ["topic", "way"],
    buckets=_LATENCY_BUCKETS,
)
RELAYED_ROWS = Histogram(
    "gantry_outbox_relayed_rows",
    "Outbox rows each relay cycle that found some published (or dead-lettered) in one send to the broker",
    buckets=(1, 2, 5, 10, 25, 50, 100, 200),
)
FETCHED, HANDED_ON = "fetched", "handed on"
DEPLOYMENTS = Counter(
    "gantry_deployments_total",
    "Deployments that ended, by action (deploy, rollback, scale, promote, abort, undeploy…) and outcome",
    ["action", "outcome"],
)
GC_PAUSE_SECONDS = Histogram(
    "gantry_gc_pause_seconds",
    "Garbage collections of this process, by generation: seconds each held the event loop (and every thread)",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
SKIPPED_ROUTES = ("/metrics", "/healthz", "/readyz")
_GC_STARTED: dict[int, float] = {}


def watch_garbage_collections() -> None:
    """Time each of the process's garbage collections into ``gantry_gc_pause_seconds`` (once per process)."""
    if _timed_collection not in gc.callbacks:
        gc.callbacks.append(_timed_collection)


def _timed_collection(phase: str, info: dict[str, int]) -> None:
    generation = info["generation"]
    if phase == "start":
        _GC_STARTED[generation] = time.perf_counter()
    elif (started := _GC_STARTED.pop(generation, None)) is not None:
        GC_PAUSE_SECONDS.labels(generation=str(generation)).observe(time.perf_counter() - started)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUEST_SECONDS.labels(method=method, route=route, status=str(status)).observe(seconds)


def observe_handled(topic: str, envelope: Envelope) -> None:
    """An event was handled now: its hop since its own time, its chain since the chain's first event."""
    now = utcnow()
    HOP_SECONDS.labels(topic=topic).observe(max(0.0, (now - envelope.time).total_seconds()))
    CHAIN_SECONDS.labels(topic=topic).observe(max(0.0, (now - envelope.chain_started).total_seconds()))


def observe_batch(topic: str, way: str, events: int, seconds: float) -> None:
    """A consumer batch of ``events`` ended after ``seconds`` (``way``: ``FETCHED`` or ``HANDED_ON``)."""
    BATCH_EVENTS.labels(topic=topic, way=way).observe(events)
    BATCH_SECONDS.labels(topic=topic, way=way).observe(seconds)


def observe_relayed(rows: int) -> None:
    """A relay cycle published (or dead-lettered) ``rows`` outbox rows."""
    RELAYED_ROWS.observe(rows)


def count_dead_lettered(topic: str, reason: str) -> None:
    DEAD_LETTERED.labels(topic=topic, reason=reason).inc()


ON_COMMIT = "gantry_count_on_commit"  # in a session's ``info``: the counts its commit adds


def count_on_commit(session: SaAsyncSession, action: str, outcome: str) -> None:
    """Count a deployment's outcome once the transaction that records it has committed; not when
    it, or the savepoint it was recorded in (a use case's in a batch), is rolled back."""
    sync = session.sync_session
    within = sync.get_nested_transaction() or sync.get_transaction()
    sync.info.setdefault(ON_COMMIT, []).append((within, DEPLOYMENTS.labels(action=action, outcome=outcome)))


# Listened for once, on every session: adding a listener to each session cost 9 µs each time.
@event.listens_for(Session, "after_commit")
def _count_committed(session: Session) -> None:
    for _within, child in session.info.pop(ON_COMMIT, ()):
        child.inc()


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, rolled_back: SessionTransaction) -> None:
    """A transaction or savepoint rolled back: the outcomes recorded in it (or in one inside it) go."""
    if counts := session.info.get(ON_COMMIT):
        session.info[ON_COMMIT] = [(within, child) for within, child in counts if not _inside(within, rolled_back)]


def _inside(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False


async def refresh(runtime: Runtime) -> None:
    """Read the gauges: the outbox from the database, the lag from the consumer."""
    from shared.outbox import OutboxDeadLetter, OutboxMessage  # the relay counts into this module

    async with runtime.uow.sessions() as session:
        waiting = col(OutboxMessage.published_at).is_(None)
        count, oldest = (
            await session.exec(select(func.count(), func.min(OutboxMessage.created_at)).where(waiting))
        ).one()
        dead = (await session.exec(select(func.count()).select_from(OutboxDeadLetter))).one()
    OUTBOX_PENDING.set(count)
    OUTBOX_OLDEST_AGE.set(max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else 0.0)
    OUTBOX_DEAD_LETTERS.set(dead)
    CONSUMER_LAG.clear()
    faust_app = getattr(runtime, "faust_app", None)
    if faust_app is not None:
        for topic, partition, lag in consumer_lag(faust_app):
            CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(lag)


def consumer_lag(app: faust.App) -> Iterable[tuple[str, int, int]]:
    """(topic, partition, records behind) for each partition assigned to this instance whose end is known."""
    consumer = app.consumer
    try:
        assigned = consumer.assignment()
    except Exception:  # not started yet, or stopping: no partitions to speak of
        return []
    # faust keeps the last offset handed to the agent and the offset committed per partition
    read_offsets, committed = getattr(consumer, "_read_offset", {}), getattr(consumer, "_committed_offset", {})
    lags = []
    for tp in sorted(assigned):
        try:
            end = consumer.highwater(tp)
        except Exception:
            continue
        read = read_offsets.get(tp)
        position = read + 1 if read is not None else committed.get(tp)
        if end is None or position is None:
            continue
        lags.append((tp.topic, tp.partition, max(0, end - position)))
    return lags


def metrics_router(runtime_of: Callable[[Request], Runtime], token: str | None) -> APIRouter:
    """``GET /metrics``: open by default (nothing secret or personal in it); with ``token`` (the
    ``GANTRY_METRICS_TOKEN`` setting) only a scraper that sends it as a bearer token is answered."""
    router = APIRouter(tags=["health"])

    @router.get("/metrics", response_class=Response, include_in_schema=False)
    async def read_metrics(request: Request) -> Response:
        """Prometheus' text exposition of this service's metrics."""
        if token is not None and not _bearer_is(request.headers.get("authorization"), token):
            raise NotAuthenticated("/metrics wants Authorization: Bearer <GANTRY_METRICS_TOKEN>")
        await refresh(runtime_of(request))
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def _bearer_is(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
