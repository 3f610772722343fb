"""Versioning's hooks and announcements arriving at the same moment, on both real databases.

The guide: "each pushed change produces a new version". A hook that overtakes its service's
announcement is kept; when both are applied at once, neither may miss the other."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from sqlalchemy import event

from services.versioning import handlers
from services.versioning.models import KnownService, ParkedHook, Pipeline, PipelineJob, Version
from shared.batches import index_rows, indexed
from shared.bus import folded, with_prefetch
from shared.consume import handle_batch
from shared.db import create_tables, make_engine, session_factory
from shared.events import Envelope, HookReceived, ServiceCreated, Topic, new_event
from shared.outbox import OUTBOX_TABLES, UnitOfWork
from shared.settings import Settings
from tests.unit.test_shared import FakeDeadLetters

pytestmark = pytest.mark.integration
ROUNDS = 25


@pytest.fixture
async def uow(database_settings: Settings):
    engine = make_engine("versioning", database_settings)
    await create_tables(
        engine, "versioning", [*OUTBOX_TABLES, KnownService, Pipeline, PipelineJob, Version, ParkedHook]
    )
    yield UnitOfWork(session_factory(engine))
    await engine.dispose()


def announcement(number: int) -> Envelope:
    data = ServiceCreated(
        service_id=f"s{number}",
        project="shop",
        service=f"web{number}",
        name="Web",
        group="g",
        type="go-http",
        repository_url="file:///r",
        repository_web_url="file:///r",
        repository_path=f"acme/web{number}",
        scm_project_id=f"local-{number}",
    )
    return new_event(Topic.SERVICE_CREATED, data, source="gantry/catalog", subject=f"shop/web{number}")


def success_hook(number: int) -> Envelope:
    hook = {
        "object_kind": "pipeline",
        "object_attributes": {"id": 1, "ref": "main", "sha": "a" * 40, "status": "success"},
        "project": {"id": f"local-{number}", "path_with_namespace": f"acme/web{number}"},
    }
    data = HookReceived(scm_project_id=f"local-{number}", event="Pipeline Hook", delivery_id=f"d-{number}", hook=hook)
    return Envelope(
        id=f"d-{number}",
        type=Topic.HOOK_RECEIVED.value,
        source="gantry/gateway",
        subject=f"acme/web{number}",
        correlation_id=f"d-{number}",
        data=data.model_dump(mode="json"),
    )


async def apply(handler, envelope: Envelope, uow: UnitOfWork) -> None:
    """As an agent does: an outage or a write conflict is retried (here at once, a few times)."""
    for attempt in range(20):
        try:
            await handler(envelope, uow=uow)
            return
        except Exception:  # the agent retries outages and write conflicts: here at once, a few times
            if attempt == 19:
                raise
            await asyncio.sleep(0.01)


async def test_a_hook_and_its_announcement_at_the_same_moment_make_one_pipeline(uow: UnitOfWork) -> None:
    for number in range(ROUNDS):
        await asyncio.gather(
            apply(handlers.on_hook_received, success_hook(number), uow),
            apply(handlers.on_service_created, announcement(number), uow),
        )
    missed = [number for number in range(ROUNDS) if not await handlers.list_pipelines("shop", f"web{number}", uow=uow)]
    assert missed == [], f"hooks kept and never applied: {len(missed)} of {ROUNDS}"


def _hook_of_pipeline(number: int, pipeline_id: int) -> Envelope:
    envelope = success_hook(number)
    envelope.data["hook"]["object_attributes"]["id"] = pipeline_id
    return envelope.model_copy(update={"id": f"d-{number}-{pipeline_id}"})


async def test_a_batch_of_hooks_and_their_announcement_at_the_same_moment_miss_nothing(uow: UnitOfWork) -> None:
    # a batch reads its repositories' services ahead: it must take their locks first, as a hook does
    handler = with_prefetch(handlers.prefetch_hooks, partial(handlers.on_hook_received, uow=uow))
    engine = uow.sessions.kw["bind"].sync_engine
    locks: list[str] = []
    listener = lambda _c, _k, sql, *_: locks.append(sql) if "pg_advisory_xact_lock" in sql else None  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        for number in range(100, 100 + ROUNDS):
            hooks = [_hook_of_pipeline(number, pipeline_id) for pipeline_id in (1, 2, 3)]
            records = [(b"k", hook.model_dump_json().encode()) for hook in hooks]
            await asyncio.gather(
                handle_batch(Topic.HOOK_RECEIVED.value, records, handler, FakeDeadLetters(), uow),
                apply(handlers.on_service_created, announcement(number), uow),
            )
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    seen = {
        number: await handlers.list_pipelines("shop", f"web{number}", uow=uow) for number in range(100, 100 + ROUNDS)
    }
    missed = {number: len(pipelines) for number, pipelines in seen.items() if len(pipelines) != 3}
    assert missed == {}, f"pipelines recorded of 3, where not all were: {missed}"
    if engine.dialect.name == "postgresql":  # the batch's lock once, the announcement's once, per round
        assert len(locks) == 2 * ROUNDS, f"{len(locks)} lock statements for {ROUNDS} rounds"


async def test_a_batch_trusts_its_index_only_where_nothing_else_writes_those_rows(uow: UnitOfWork) -> None:
    # SQLite: the batch holds the write lock. PostgreSQL: only under the locks the batch took.
    async with uow.batch(["e-1"]) as batch:
        session = batch.session
        index_rows(session, KnownService, {"scm_project_id": ["x"]}, [])
        without_locks = indexed(session, KnownService, scm_project_id="x")
        index_rows(session, KnownService, {"scm_project_id": ["x"]}, [], locked=True)
        with_locks = indexed(session, KnownService, scm_project_id="x")
    on_sqlite = uow.sessions.kw["bind"].dialect.name == "sqlite"
    assert without_locks == ([] if on_sqlite else None), "unlocked on PostgreSQL: the database is asked"
    assert with_locks == []


async def test_a_batch_of_hooks_takes_its_repositories_and_versions_locks_in_one_statement_each(
    uow: UnitOfWork,
) -> None:
    # ADR 3: the successes a batch of hooks announces make their versions in that batch, under
    # their services' versions locks; on PostgreSQL each kind is taken for the whole batch at once
    numbers = range(200, 204)
    for number in numbers:
        await apply(handlers.on_service_created, announcement(number), uow)
    successes = partial(handlers.on_pipeline_succeeded, uow=uow, registry="r")
    uow.fold(Topic.PIPELINE_SUCCEEDED, folded(with_prefetch(handlers.prefetch_successes, successes)))
    handler = with_prefetch(handlers.prefetch_hooks, partial(handlers.on_hook_received, uow=uow))
    hooks = [_hook_of_pipeline(number, 1) for number in reversed(numbers)]
    engine = uow.sessions.kw["bind"].sync_engine
    locks: list[object] = []
    listener = lambda _c, _k, sql, params, *_: locks.append(params) if "pg_advisory_xact_lock" in sql else None  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        records = [(b"k", hook.model_dump_json().encode()) for hook in hooks]
        await handle_batch(Topic.HOOK_RECEIVED.value, records, handler, FakeDeadLetters(), uow)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    made = {
        number: [v.pipeline_id for v in await handlers.list_versions("shop", f"web{number}", uow=uow)]
        for number in numbers
    }
    assert made == {number: [1] for number in numbers}
    if engine.dialect.name == "postgresql":
        assert len(locks) == 2, f"the repositories' locks, then the versions', each in one statement: {locks}"
        named = [next(iter(params.values() if isinstance(params, dict) else params)) for params in locks]
        assert named == [
            sorted(f"versioning-repository:local-{number}" for number in numbers),
            sorted(f"versioning-versions:s{number}" for number in numbers),
        ]
