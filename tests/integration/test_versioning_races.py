"""Versioning's hooks and announcements arriving at the same moment, on both real databases.

The guide: "each pushed change produces a new version". A hook that overtakes its service's
announcement is kept; when both are applied at once, neither may miss the other."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from services.versioning import handlers
from services.versioning.models import KnownService, ParkedHook, Pipeline, PipelineJob, Version
from shared.db import create_tables, make_engine, session_factory
from shared.events import Envelope, HookReceived, ServiceCreated, Topic, new_event
from shared.outbox import OUTBOX_TABLES, UnitOfWork
from shared.settings import Settings
from tests.support import SECRET

pytestmark = pytest.mark.integration
ROUNDS = 25


@pytest.fixture(params=["sqlite", "postgres"])
async def uow(request: pytest.FixtureRequest, tmp_path: Path):
    settings = Settings(home=tmp_path, secret=SECRET)
    if request.param == "postgres":
        postgres = request.getfixturevalue("postgres")
        database = f"gantry_{os.urandom(4).hex()}"
        postgres.create_database(database)
        settings = settings.model_copy(update={"database_url": postgres.url(database)})
    engine = make_engine("versioning", settings)
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
