"""Deploy's batches of released versions on both real databases.

The guide: "With auto-deploy set, a released version needs no manual deployment." A batch of
releases reads what it needs ahead, once; on PostgreSQL it first locks its services' released
versions, as a withdrawal and a deletion lock them, so what it read stays true until it commits and
no release reads its own row again (a read that would first flush the rows the releases before
it added)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from services.deploy import handlers, known_services
from services.deploy.models import DEPLOY_TABLES, ReleasedVersion
from shared.bus import with_prefetch
from shared.consume import handle_batch
from shared.db import create_tables, make_engine, session_factory
from shared.events import Envelope, Topic
from shared.outbox import OUTBOX_TABLES, UnitOfWork
from shared.settings import Settings
from tests.unit.conftest import statements_of
from tests.unit.test_deploy_handlers import FakeCluster, outbox, ready, released_event
from tests.unit.test_deploy_lifecycle import withdrawn
from tests.unit.test_shared import FakeDeadLetters

pytestmark = pytest.mark.integration
VERSIONS = ("1.1.0", "1.2.0", "1.3.0", "1.4.0")


@pytest.fixture
async def uow(database_settings: Settings):
    engine = make_engine("deploy", database_settings)
    await create_tables(engine, "deploy", [*OUTBOX_TABLES, *DEPLOY_TABLES])
    yield UnitOfWork(session_factory(engine), source="gantry/deploy")
    await engine.dispose()


async def _record(uow: UnitOfWork, envelopes: list[Envelope]) -> None:
    async def record(envelope: Envelope) -> None:
        await handlers.record_released_version(envelope, uow=uow)

    handler = with_prefetch(handlers.prefetch_released, record)
    raw = [(e.data["service_id"].encode(), e.model_dump_json().encode()) for e in envelopes]
    await handle_batch(Topic.VERSION_RELEASED.value, raw, handler, FakeDeadLetters(), uow)


async def _released(uow: UnitOfWork) -> dict[str, bool]:
    """Each released version and whether it is withdrawn."""
    async with uow.sessions() as session:
        rows = (await session.exec(select(ReleasedVersion).order_by(ReleasedVersion.version))).all()
    return {row.version: row.withdrawn_at is not None for row in rows}


async def test_a_batch_of_releases_reads_their_rows_once_and_inserts_them_together(uow: UnitOfWork) -> None:
    await ready(uow, FakeCluster())
    await handlers.set_auto_deploy("shop", "orders", "dev", True, by="alice", uow=uow)

    with statements_of(uow) as sent:
        await _record(uow, [released_event(version, correlation_id=f"c-{version}") for version in VERSIONS])

    reads = [s for s in sent if s.startswith("SELECT") and "FROM released_versions" in s]
    assert len(reads) == 1, f"read ahead once for the batch, not again per release: {reads}"
    for table in ("released_versions", "deployments"):
        inserts = [s for s in sent if s.startswith(f"INSERT INTO {table} ")]
        assert len(inserts) == 1, f"the batch's {table} inserted in one statement, not flushed one by one"
    locks = [s for s in sent if "advisory_xact_lock" in s]
    if uow.sessions.kw["bind"].dialect.name == "postgresql":
        assert len(locks) == 1, f"the batch's service locked once, before it read ahead: {locks}"
    else:
        assert locks == [], "SQLite's write lock does it"
    requested = await outbox(uow, Topic.DEPLOY_REQUESTED)
    assert [(e.data["version"], e.data["trigger"]) for e in requested[1:]] == [(v, "auto") for v in VERSIONS]
    assert await _released(uow) == dict.fromkeys(("1.0.0", *VERSIONS), False)


async def test_a_withdrawal_and_a_release_after_it_each_see_what_the_other_left(uow: UnitOfWork) -> None:
    # A withdrawal takes the lock a batch of releases takes: it withdraws what the batch released,
    # and a later release brings its version back.
    await ready(uow, FakeCluster())
    await _record(uow, [released_event(version) for version in VERSIONS[:2]])

    await known_services.on_release_withdrawn(withdrawn(), uow=uow)
    assert await _released(uow) == {"1.0.0": True, "1.1.0": True, "1.2.0": True}

    await _record(uow, [released_event("1.2.0", correlation_id="again"), released_event("1.3.0")])
    assert await _released(uow) == {"1.0.0": True, "1.1.0": True, "1.2.0": False, "1.3.0": False}
