"""Batches of ``deploy.status`` in release and catalog, on both real databases.

Each keeps where a service runs ("a service still running somewhere cannot be deleted"; release
lists where each version runs). A batch reads what its statuses need ahead, once; on PostgreSQL
it first takes, in one statement, the locks every writer of those rows takes, so what it read
stays true until it commits: no status reads its row again or takes its lock again, either of
which would first flush what the status before it changed."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from sqlmodel import select

from services.catalog import app as catalog_app
from services.catalog import handlers as catalog_handlers
from services.catalog.models import Project, ProjectCreate, Service
from services.catalog.running import ServiceRun, on_deploy_status
from services.release import lifecycle
from services.release.models import TABLES as RELEASE_TABLES
from services.release.models import Running
from shared.bus import with_prefetch
from shared.consume import handle_batch
from shared.db import create_tables, make_engine, session_factory
from shared.events import Envelope, Topic
from shared.outbox import OUTBOX_TABLES, UnitOfWork
from shared.settings import Settings
from tests.unit.conftest import statements_of
from tests.unit.test_catalog import RecordingScm, create
from tests.unit.test_catalog_running import status
from tests.unit.test_release_handlers import add_environments, known_service
from tests.unit.test_release_lifecycle import deploy_status
from tests.unit.test_shared import FakeDeadLetters

pytestmark = pytest.mark.integration


async def _uow(settings: Settings, service: str, tables: list) -> UnitOfWork:
    engine = make_engine(service, settings)
    await create_tables(engine, service, [*OUTBOX_TABLES, *tables])
    return UnitOfWork(session_factory(engine), source=f"gantry/{service}")


def _raw(envelopes: list[Envelope]) -> list[tuple[bytes | None, bytes | None]]:
    return [(e.data["service_id"].encode(), e.model_dump_json().encode()) for e in envelopes]


def _on_postgres(uow: UnitOfWork) -> bool:
    return uow.sessions.kw["bind"].dialect.name == "postgresql"


async def test_release_applies_a_batch_of_statuses_with_one_read_and_one_lock(database_settings: Settings) -> None:
    uow = await _uow(database_settings, "release", RELEASE_TABLES)
    try:
        await add_environments(uow, "qa")
        services = [await known_service(uow, "qa") for _ in range(3)]
        handler = with_prefetch(lifecycle.prefetch_statuses, partial(lifecycle.on_deploy_status, uow=uow))
        first = [deploy_status(service, "qa", "progressing") for service in services]
        await handle_batch(Topic.DEPLOY_STATUS.value, _raw(first), handler, FakeDeadLetters(), uow)
        later = [deploy_status(service, "qa", state) for state in ("succeeded", "failed") for service in services]

        with statements_of(uow) as sent:
            await handle_batch(Topic.DEPLOY_STATUS.value, _raw(later), handler, FakeDeadLetters(), uow)

        reads = [s for s in sent if s.startswith("SELECT") and "FROM release_running" in s]
        updates = [s for s in sent if s.startswith("UPDATE release_running")]
        locks = [s for s in sent if "advisory_xact_lock" in s]
        assert len(reads) == 1, f"the tracks read ahead once, not again per status: {reads}"
        assert len(updates) == 1, "the batch's changes to the tracks sent together, not flushed one by one"
        assert len(locks) == (1 if _on_postgres(uow) else 0), f"one statement locks the batch's services: {locks}"
        async with uow.sessions() as session:
            rows = (await session.exec(select(Running))).all()
        assert sorted((row.service_id, row.state) for row in rows) == sorted(
            (service.data["service_id"], "failed") for service in services
        ), "each service's last status is kept"
    finally:
        await uow.sessions.kw["bind"].dispose()


async def test_catalog_applies_a_batch_of_statuses_with_one_lock(database_settings: Settings, tmp_path: Path) -> None:
    uow = await _uow(database_settings, "catalog", [Project, Service, ServiceRun])
    try:
        project = ProjectCreate(code="shop", name="Shop", gitlab_group="acme")
        await catalog_handlers.create_project(project, by="root", uow=uow)
        scm = RecordingScm(tmp_path / "repos")
        services = [await create(uow, scm, code=code, name=code.title()) for code in ("web", "api", "jobs")]
        handler = with_prefetch(catalog_app.statuses_ahead, partial(on_deploy_status, uow=uow))
        first = [status(service, "qa", "progressing") for service in services]
        await handle_batch(Topic.DEPLOY_STATUS.value, _raw(first), handler, FakeDeadLetters(), uow)
        later = [
            status(service, "qa", state, f"d-{state}") for state in ("succeeded", "failed") for service in services
        ]

        with statements_of(uow) as sent:
            await handle_batch(Topic.DEPLOY_STATUS.value, _raw(later), handler, FakeDeadLetters(), uow)

        locks = [s for s in sent if "advisory_xact_lock" in s]
        updates = [s for s in sent if s.startswith("UPDATE service_runs")]
        assert len(locks) == (1 if _on_postgres(uow) else 0), f"one statement locks the batch's services: {locks}"
        assert len(updates) == 1, "the batch's changes sent together, not flushed one by one by each status's lock"
        async with uow.sessions() as session:
            rows = (await session.exec(select(ServiceRun))).all()
        assert sorted((row.service_id, row.state, row.deployment_id) for row in rows) == sorted(
            (service.id, "failed", "d-failed") for service in services
        )
    finally:
        await uow.sessions.kw["bind"].dispose()
