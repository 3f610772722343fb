"""Benchmark: what a batch's outgoing events and a log line cost a consumer.

    python -m bench.batch_events [--events 1000] [--batch 25]

Outgoing events: on a SQLite file with the outbox tables, ``--events`` events are applied in
batches of ``--batch`` (``shared.consume.apply_batch``, without savepoints, as a batch first is),
each use case claiming its event, reading one row (as every use case reads before it writes) and
emitting one event. Two ways: the outbox row added to the session, as ``add_event`` did before
(each next read flushes it, one INSERT per event), and ``add_event`` as it is (the batch keeps the
rows and inserts them in one statement before it commits). Prints the CPU time per event of this
process (the event loop's and aiosqlite's thread's), each way right after the other, twice.

A log line: ``--events`` lines of the webhook door's "hook queued", with a correlation id bound,
through the standard library's logging (the way Gantry's lines went before, with the same JSON
renderer) and through ``shared.logging`` as it is, written to ``/dev/null``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from sqlmodel import select

from bench.measures import table
from shared import outbox
from shared.consume import Record, apply_batch
from shared.db import create_tables, make_engine, session_factory
from shared.events import Envelope, PipelineSucceeded, Topic, VersionCreated, new_event
from shared.logging import _SHARED, configure_logging, get_logger
from shared.outbox import OUTBOX_TABLES, InboxEntry, OutboxMessage, UnitOfWork, claim_inbox, emit
from shared.settings import Settings

Handler = Callable[[Envelope], Awaitable[None]]
_READ = select(InboxEntry.event_id).limit(1)


def _succeeded(pipeline_id: int) -> Envelope:
    data = PipelineSucceeded(service_id="s1", project="p", service="s", pipeline_id=pipeline_id, ref="m", sha="a")
    return new_event(Topic.PIPELINE_SUCCEEDED, data, source="bench", subject="p/s")


def _handler(uow: UnitOfWork) -> Handler:
    async def handler(envelope: Envelope) -> None:
        data = envelope.payload(PipelineSucceeded)
        async with uow.begin() as session:
            if not await claim_inbox(session, envelope):
                return
            await session.exec(_READ)
            version = VersionCreated(
                service_id=data.service_id,
                project="p",
                service="s",
                version=f"v{data.pipeline_id}",
                sha="a",
                ref="m",
                pipeline_id=data.pipeline_id,
                image="registry.local/p/s:a",
            )
            emit(session, version, cause=envelope)

    return handler


def _added_to_the_session(session, topic, envelope, key) -> None:  # type: ignore[no-untyped-def]
    """``add_event`` as it was: the row in the session, flushed by the next read."""
    session.add(OutboxMessage(event_id=envelope.id, topic=topic.value, key=key, payload=envelope.model_dump_json()))
    session.info["outbox"] = True


async def outgoing(folder: Path, events: int, size: int) -> list[tuple[str, float]]:
    engine = make_engine("bench", Settings(home=folder))
    await create_tables(engine, "bench", list(OUTBOX_TABLES))
    uow = UnitOfWork(session_factory(engine), source="gantry/bench")
    handler, kept_by_the_batch, numbers = _handler(uow), outbox.add_event, iter(range(10**9))
    rows = []
    for _round in range(2):
        for name, add in (
            ("added to the session (before)", _added_to_the_session),
            ("kept by the batch", kept_by_the_batch),
        ):
            outbox.add_event = add  # emit() calls it through the module
            try:
                cpu = time.process_time()
                for _batch in range(events // size):
                    envelopes = [_succeeded(next(numbers)) for _ in range(size)]
                    records = [Record(b"s1", e.model_dump_json().encode(), e) for e in envelopes]
                    await apply_batch(uow, records, handler, careful=False)
                cpu = time.process_time() - cpu
            finally:
                outbox.add_event = kept_by_the_batch
            rows.append((f"outbox rows {name}", 1e6 * cpu / (events // size * size)))
    await engine.dispose()
    return rows


def log_lines(lines: int) -> list[tuple[str, float]]:
    stderr, rows = sys.stderr, []
    with open(os.devnull, "w") as sink:
        sys.stderr = sink
        try:
            for name, logger in (
                ("the standard library's logging (before)", _stdlib_logger(sink)),
                ("shared.logging", None),
            ):
                configure_logging("gateway")  # the processors, and a fresh root handler on the sink
                log = logger or get_logger("bench.door")
                structlog.contextvars.bind_contextvars(correlation_id="c" * 36)
                cpu = time.process_time()
                for n in range(lines):
                    log.info("hook queued", event_id="e" * 36, scm_project_id="42", pipeline_id=n, status="success")
                rows.append((f"a log line through {name}", 1e6 * (time.process_time() - cpu) / lines))
        finally:
            sys.stderr = stderr
    return rows


def _stdlib_logger(sink: io.TextIOBase):  # type: ignore[no-untyped-def]
    """Gantry's lines as they went before: structlog over the standard library's logging."""
    handler = logging.StreamHandler(sink)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logger = logging.getLogger("bench.before")
    logger.handlers[:] = [handler]
    logger.propagate = False
    return structlog.wrap_logger(
        logger,
        processors=[
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=25)
    args = parser.parse_args()
    configure_logging("bench", "warning")  # the batches' own debug lines stay out of the figures
    with tempfile.TemporaryDirectory() as folder:
        rows = asyncio.run(outgoing(Path(folder), args.events, args.batch))
    rows += log_lines(args.events * 20)
    print(f"\n{args.events} events in batches of {args.batch}, each reading once and emitting once; log lines:")
    print(table(("way", "CPU µs per event or line"), [(name, f"{cpu:.1f}") for name, cpu in rows]))


if __name__ == "__main__":
    main()
