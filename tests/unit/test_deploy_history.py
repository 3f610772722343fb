"""With a long deployment history, deploy's use cases give the same answers and load only what they use.

Every event of the auto-deploy chain reads the stable track's history; a use case that loaded the
whole history each time would grow its work and its memory with every deployment ever made.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event

from services.deploy import handlers, lookups, requests
from services.deploy.handlers import Action
from services.deploy.models import DEPLOY_TABLES, Deployment
from services.deploy.rendered import RenderedManifestsDriver
from shared.bus import with_prefetch
from shared.consume import handle_batch
from shared.events import Envelope, Topic
from shared.outbox import UnitOfWork, decode_envelope
from tests.support import KEYRING
from tests.unit.conftest import UowFactory, outbox, query_plan, reads_of
from tests.unit.test_deploy_handlers import (
    ENV,
    PROJECT,
    SERVICE,
    SERVICE_ID,
    add_resource,
    deploy,
    release,
    released_event,
)
from tests.unit.test_shared import FakeDeadLetters

PAST_DEPLOYMENTS = 40


@pytest.fixture
async def uow(make_uow: UowFactory) -> UnitOfWork:
    return await make_uow("deploy", DEPLOY_TABLES)  # type: ignore[misc]


@pytest.fixture
def driver(tmp_path: Path) -> RenderedManifestsDriver:
    return RenderedManifestsDriver(tmp_path / "manifests")


@contextmanager
def deployments_loaded() -> Iterator[list[str]]:
    """The ids of the Deployment rows read from the database inside the block."""
    loaded: list[str] = []

    def on_load(target: Deployment, _context: object) -> None:
        loaded.append(target.id)

    event.listen(Deployment, "load", on_load)
    try:
        yield loaded
    finally:
        event.remove(Deployment, "load", on_load)


async def apply_newest_request(uow: UnitOfWork, driver: RenderedManifestsDriver) -> None:
    newest = (await outbox(uow, Topic.DEPLOY_REQUESTED))[-1]
    await requests.apply_deploy_request(
        decode_envelope(newest.payload.encode()), uow=uow, driver=driver, keyring=KEYRING
    )


async def long_history(uow: UnitOfWork, driver: RenderedManifestsDriver) -> None:
    """1.0.0 deployed by hand, then 1.1.0, then many scalings of 1.1.0; the last to 3 replicas."""
    await release(uow, "1.0.0", "1.1.0")
    await add_resource(uow, "orders-db", "database", url="postgres://db-a/orders")
    await deploy(uow, "1.0.0", resources=["orders-db"], replicas=2)
    await apply_newest_request(uow, driver)
    await deploy(uow, "1.1.0")
    await apply_newest_request(uow, driver)
    for replicas in [1, 2] * (PAST_DEPLOYMENTS // 2) + [3]:
        await handlers.scale(Action(PROJECT, SERVICE, ENV, by="alice", correlation_id="s"), replicas, uow=uow)
        await apply_newest_request(uow, driver)


async def test_the_newest_of_a_long_track_history_is_the_same_with_a_limit(
    uow: UnitOfWork, driver: RenderedManifestsDriver
) -> None:
    await long_history(uow, driver)
    async with uow.sessions() as session:
        everything = await lookups.track_history(session, SERVICE_ID, ENV, "stable")
        newest = await lookups.track_history(session, SERVICE_ID, ENV, "stable", limit=1)
        few = await lookups.track_history(session, SERVICE_ID, ENV, "stable", limit=5)

    assert len(everything) == PAST_DEPLOYMENTS + 3
    assert [d.id for d in newest] == [everything[0].id]
    assert [d.id for d in few] == [d.id for d in everything[:5]]
    assert (newest[0].action, newest[0].replicas) == ("scale", 3)


async def test_auto_deploy_after_a_long_history_reads_only_the_newest_deployment(
    uow: UnitOfWork, driver: RenderedManifestsDriver
) -> None:
    await long_history(uow, driver)
    await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="alice", uow=uow)

    with deployments_loaded() as loaded:
        auto = await handlers.record_released_version(released_event("1.2.0"), uow=uow)

    assert auto is not None and (auto.trigger, auto.version) == ("auto", "1.2.0")
    assert auto.replicas == 3, "the newest stable deployment's replicas"
    assert len(loaded) <= 1, f"{len(loaded)} past deployments read to auto-deploy one version"


async def test_auto_deploy_reads_the_history_through_indexes_not_by_scanning_it(
    uow: UnitOfWork, driver: RenderedManifestsDriver
) -> None:
    await long_history(uow, driver)
    await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="alice", uow=uow)
    with reads_of(uow, "deployments") as reads:
        await handlers.record_released_version(released_event("1.2.0"), uow=uow)

    assert reads, "auto-deploy reads the deployments"
    for statement, parameters in reads:
        steps = await query_plan(uow, statement, parameters)
        searched = "(service_id=? AND environment=? AND" in steps  # one service's rows of one kind
        # (a SELECT of subqueries alone has no table to scan: SQLite's "SCAN CONSTANT ROW")
        scans = [step for step in steps.split(" / ") if step.startswith("SCAN") and step != "SCAN CONSTANT ROW"]
        assert searched and not scans and "TEMP B-TREE" not in steps, f"{statement}: {steps}"


async def test_rollback_after_a_long_history_finds_the_previous_version_without_loading_it(
    uow: UnitOfWork, driver: RenderedManifestsDriver
) -> None:
    await long_history(uow, driver)

    with deployments_loaded() as loaded:
        back = await handlers.rollback(Action(PROJECT, SERVICE, ENV, by="a", correlation_id="c"), None, uow=uow)

    assert (back.action, back.version, back.replicas) == ("rollback", "1.0.0", 3)
    assert loaded == [], f"{len(loaded)} past deployments read to choose the rollback target"


async def test_a_batch_of_releases_reads_its_stable_tracks_through_indexes_not_by_scanning_them(
    uow: UnitOfWork, driver: RenderedManifestsDriver
) -> None:
    await long_history(uow, driver)
    await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="alice", uow=uow)
    events = [released_event(version, correlation_id=f"c-{version}") for version in ("1.2.0", "1.3.0")]

    async def record(envelope: Envelope) -> None:
        await handlers.record_released_version(envelope, uow=uow)

    raw = [(SERVICE_ID.encode(), envelope.model_dump_json().encode()) for envelope in events]
    with reads_of(uow, "deployments") as reads, deployments_loaded() as loaded:
        await handle_batch(
            Topic.VERSION_RELEASED.value, raw, with_prefetch(handlers.prefetch_released, record), FakeDeadLetters(), uow
        )

    assert len(reads) == 1 and "auto_deploy_rules" in reads[0][0], "read with the batch's rules, once"
    assert loaded == [], "no past deployment made into an object"
    steps = await query_plan(uow, *reads[0])
    scans = [step for step in steps.split(" / ") if step.startswith("SCAN")]
    assert "(service_id=? AND environment=? AND track=?)" in steps, steps  # the newest of one track
    assert "(service_id=? AND environment=? AND action=?)" in steps, steps  # its manual deploys, its removals
    assert not scans and "TEMP B-TREE" not in steps, steps
    requested = [decode_envelope(row.payload.encode()) for row in await outbox(uow, Topic.DEPLOY_REQUESTED)]
    assert [(e.data["version"], e.data["replicas"]) for e in requested[-2:]] == [("1.2.0", 3), ("1.3.0", 3)]
