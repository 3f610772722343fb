"""Deploy requests in batches (``services.deploy.requests``): applied to the cluster before the
batch's transaction, one service's in order, a redelivery not applied again, a poison request
dead-lettered alone without reaching the cluster, each service's Ingress synced once after the
commit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
from sqlalchemy import event

from services.deploy import handlers, known_services, requests
from services.deploy.handlers import Action
from services.deploy.models import DEPLOY_TABLES, Deployment, DeploymentCreate, ResourceCreate
from services.deploy.undeploy import undeploy
from shared.bus import OUTSIDE_WORK_BATCH_MAX, Batches, batch_limit, with_outside_work, with_prefetch
from shared.consume import handle_batch
from shared.events import Envelope, Topic
from shared.outbox import UnitOfWork
from tests.support import KEYRING
from tests.unit.conftest import reads_of, statements_of
from tests.unit.test_deploy_handlers import (
    ENV,
    PROJECT,
    SERVICE,
    FakeCluster,
    deploy,
    deployment,
    outbox,
    ready,
    release,
    released_event,
    work,
)
from tests.unit.test_deploy_lifecycle import service_changed
from tests.unit.test_shared import FakeDeadLetters

STAGING = "staging"


@pytest.fixture
async def uow(make_uow) -> UnitOfWork:
    return await make_uow("deploy", DEPLOY_TABLES)


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


def _raw(*envelopes: Envelope) -> list[tuple[bytes | None, bytes | None]]:
    return [(envelope.data["service_id"].encode(), envelope.model_dump_json().encode()) for envelope in envelopes]


def _batch(uow: UnitOfWork, cluster: FakeCluster, synced: list[Deployment]) -> requests.DeployRequests:
    async def recorded(deployed: list[Deployment]) -> None:
        synced.extend(deployed)

    return requests.DeployRequests(uow=uow, driver=cluster, keyring=KEYRING, recorded=recorded)


async def test_a_batch_applies_each_new_request_in_order_and_records_them_in_one_go(
    uow: UnitOfWork, cluster: FakeCluster
) -> None:
    first = await ready(uow, cluster)  # 1.0.0 deployed and applied by hand: its request is in the inbox
    await release(uow, "2.0.0", "3.0.0")
    second, third = await deploy(uow, "2.0.0"), await deploy(uow, "3.0.0")
    applied_before = len(cluster.applied)
    already, *new = await outbox(uow, Topic.DEPLOY_REQUESTED)
    poison = new[0].model_copy(update={"id": "poison-1", "data": {**new[0].data, "replicas": "many"}})
    synced: list[Deployment] = []
    batch = _batch(uow, cluster, synced)
    dead = FakeDeadLetters()

    await handle_batch(Topic.DEPLOY_REQUESTED.value, _raw(already, *new, poison), _handler(batch), dead, uow, batch)

    assert [spec.version for spec in cluster.applied[applied_before:]] == ["2.0.0", "3.0.0"], (
        "the redelivered request is not applied again, the poison one never reaches the cluster"
    )
    assert [(await deployment(uow, d.id)).state for d in (first, second, third)] == ["rendered"] * 3
    statuses = [e.data["version"] for e in await outbox(uow, Topic.DEPLOY_STATUS)]
    assert statuses == ["1.0.0", "2.0.0", "3.0.0"], "one deploy.status per request, the redelivery none"
    assert [d.version for d in synced] == ["3.0.0"], "the service's Ingress is synced once, after its last deployment"
    assert [(topic, json.loads(raw or b"{}")["id"], reason.split(":")[0]) for topic, raw, reason in dead.records] == [
        ("deploy.requested", "poison-1", "poison")
    ]


async def test_a_request_the_batch_could_not_prepare_is_applied_in_its_transaction(
    uow: UnitOfWork, cluster: FakeCluster
) -> None:
    await release(uow, "1.0.0")
    made = await deploy(uow, "1.0.0", resources=[])
    [requested] = await outbox(uow, Topic.DEPLOY_REQUESTED)
    batch = _batch(uow, cluster, [])

    recorded = await batch.record(requested)  # no ``before``: as when it failed to read the inbox

    assert recorded is not None and recorded.id == made.id and recorded.state == "rendered"
    assert [spec.version for spec in cluster.applied] == ["1.0.0"]
    assert await batch.record(requested) is None, "recorded once"


def _handler(batch: requests.DeployRequests):
    async def handler(envelope: Envelope) -> None:
        await batch.record(envelope)

    return handler


async def test_deploy_requests_are_taken_in_smaller_batches_than_events_with_no_outside_work(uow, cluster) -> None:
    # every request of a batch waits for the cluster work of all of them: at 500, a saturated
    # machine's chains stopped completing for 16 s at a time
    async def plain(_envelope: Envelope) -> None:
        return None

    async def on_request(_envelope: Envelope) -> None:
        return None

    batches = Batches(uow, max_events=500)
    with_cluster = with_outside_work(_batch(uow, cluster, []), on_request)
    assert batch_limit(plain, batches) == 500
    assert batch_limit(with_cluster, batches) == OUTSIDE_WORK_BATCH_MAX == 50
    assert batch_limit(with_cluster, Batches(uow, max_events=10)) == 10, "a lower bound of the service's holds"


async def test_a_batch_of_releases_reads_each_services_rules_once_and_deploys_as_one_by_one(
    uow: UnitOfWork, cluster: FakeCluster
) -> None:
    # "With auto-deploy set, a released version needs no manual deployment."
    await ready(uow, cluster)
    await known_services.on_service_changed(service_changed("updated", enabled=True), uow=uow)  # catalog's word
    await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="alice", uow=uow)
    events = [released_event(version, correlation_id=f"c-{version}") for version in ("1.1.0", "1.2.0", "1.3.0")]
    handler = with_prefetch(handlers.prefetch_released, _record_release(uow))
    tables = ("deploy_services", "auto_deploy_rules", "resource_choices", "instances", "released_versions")

    with ExitStack() as reading:
        reads = {table: reading.enter_context(reads_of(uow, table)) for table in (*tables, "deployments")}
        await handle_batch(Topic.VERSION_RELEASED.value, _raw(*events, events[0]), handler, FakeDeadLetters(), uow)

    assert {table: len(reads[table]) for table in tables} == dict.fromkeys(tables, 1), (
        "read once for the batch, not once per release"
    )
    assert len(reads["deployments"]) == 1, "the stable track's newest and its manual deployment: one statement, once"
    requested = await outbox(uow, Topic.DEPLOY_REQUESTED)
    assert [(e.data["version"], e.data["trigger"], e.correlation_id) for e in requested[1:]] == [
        ("1.1.0", "auto", "c-1.1.0"),
        ("1.2.0", "auto", "c-1.2.0"),
        ("1.3.0", "auto", "c-1.3.0"),
    ], "each release auto-deployed once, in order; the redelivered one not again"


async def test_a_batch_of_releases_to_several_environments_reads_their_stable_tracks_together(
    uow: UnitOfWork, cluster: FakeCluster
) -> None:
    # "With auto-deploy set, a released version needs no manual deployment": each environment's
    # auto deployment takes that stable track's replicas, read for the whole batch in one statement.
    await _auto_deployed_in_two_environments(uow, cluster)
    events = [
        released_event(version, environment, correlation_id=f"c-{environment}-{version}")
        for version in ("1.1.0", "1.2.0")
        for environment in (ENV, STAGING)
    ]
    handler = with_prefetch(handlers.prefetch_released, _record_release(uow))

    with reads_of(uow, "deployments") as reads, inserts_into(uow, "deployments") as inserts:
        await handle_batch(Topic.VERSION_RELEASED.value, _raw(*events), handler, FakeDeadLetters(), uow)

    assert len(reads) == 1, "both stable tracks read in one statement, before the batch's first release"
    assert len(inserts) == 1, "the batch's four deployments inserted together, not flushed one by one"
    requested = await outbox(uow, Topic.DEPLOY_REQUESTED)
    assert [(e.data["environment"], e.data["version"], e.data["replicas"]) for e in requested[2:]] == [
        (ENV, "1.1.0", 2),
        (STAGING, "1.1.0", 3),
        (ENV, "1.2.0", 2),
        (STAGING, "1.2.0", 3),
    ], "each environment's releases auto-deployed in order, with its own track's replicas"


async def _auto_deployed_in_two_environments(uow: UnitOfWork, cluster: FakeCluster) -> None:
    """1.0.0 deployed by hand to dev (2 replicas) and to staging (3), auto-deploy on in both."""
    await ready(uow, cluster)  # dev: deployed by hand with 2 replicas
    await release(uow, "1.0.0", environment=STAGING)
    await handlers.create_resource(
        STAGING,
        ResourceCreate(name="orders-db", type="database", data={"url": "postgres://db-s/orders"}),
        by="ops",
        uow=uow,
        keyring=KEYRING,
    )
    body = {"project": PROJECT, "service": SERVICE, "environment": STAGING, "version": "1.0.0"}
    await handlers.request_deployment(
        DeploymentCreate(**body, resources=["orders-db"], replicas=3), by="alice", correlation_id="r", uow=uow
    )
    await work(uow, cluster)
    for environment in (ENV, STAGING):
        await handlers.set_auto_deploy(PROJECT, SERVICE, environment, True, by="alice", uow=uow)


async def test_a_batch_of_releases_reads_each_environments_manual_deployments_and_removals_apart(
    uow: UnitOfWork, cluster: FakeCluster
) -> None:
    # "auto-deploy applies only after a first manual deployment", and undeploy starts afresh: the
    # workload removed from dev waits for a deployment by hand there; staging's rule still applies.
    await _auto_deployed_in_two_environments(uow, cluster)
    await undeploy(Action(PROJECT, SERVICE, ENV, by="dora", correlation_id="c-undeploy"), uow=uow)
    await work(uow, cluster)
    events = [released_event("1.1.0", environment, correlation_id=f"c-{environment}") for environment in (ENV, STAGING)]
    handler = with_prefetch(handlers.prefetch_released, _record_release(uow))

    await handle_batch(Topic.VERSION_RELEASED.value, _raw(*events), handler, FakeDeadLetters(), uow)

    requested = await outbox(uow, Topic.DEPLOY_REQUESTED)
    autos = [(e.data["environment"], e.data["version"]) for e in requested if e.data["trigger"] == "auto"]
    assert autos == [(STAGING, "1.1.0")], "dev's removal does not stop staging's rule, and stops dev's"


@contextmanager
def inserts_into(uow: UnitOfWork, table: str) -> Iterator[list[str]]:
    """The INSERT statements into ``table`` run while the block runs (one per executemany)."""
    inserts: list[str] = []
    with statements_of(uow) as sent:
        yield inserts
        inserts.extend(statement for statement in sent if statement.startswith(f"INSERT INTO {table} "))


def _record_release(uow: UnitOfWork):
    async def handler(envelope: Envelope) -> None:
        await handlers.record_released_version(envelope, uow=uow)

    return handler


async def _two_new_requests(uow: UnitOfWork, cluster: FakeCluster) -> list[Envelope]:
    """A first deployment applied, then two more requested (2.0.0, 3.0.0): their requests."""
    await ready(uow, cluster)
    await release(uow, "2.0.0", "3.0.0")
    await deploy(uow, "2.0.0")
    await deploy(uow, "3.0.0")
    _already, *new = await outbox(uow, Topic.DEPLOY_REQUESTED)
    return new


async def test_a_batch_of_requests_reads_its_deployments_and_instances_once(
    uow: UnitOfWork, cluster: FakeCluster
) -> None:
    new = await _two_new_requests(uow, cluster)
    batch = _batch(uow, cluster, [])
    handler = with_prefetch(batch.prefetch, with_outside_work(batch, _handler(batch)))

    with reads_of(uow, "instances") as instances:
        await handle_batch(Topic.DEPLOY_REQUESTED.value, _raw(*new), handler, FakeDeadLetters(), uow, batch)

    assert len(instances) == 1, "the service's instances read once for the batch"
    statuses = [(e.data["version"], e.data["state"]) for e in await outbox(uow, Topic.DEPLOY_STATUS)]
    assert statuses[-2:] == [("2.0.0", "rendered"), ("3.0.0", "rendered")]


async def test_a_batch_reads_the_inbox_and_every_requests_values_in_one_session(
    uow: UnitOfWork, cluster: FakeCluster
) -> None:
    new = await _two_new_requests(uow, cluster)
    batch = _batch(uow, cluster, [])
    pool = uow.sessions.kw["bind"].sync_engine.pool
    checkouts: list[object] = []

    def checked_out(*_args: object) -> None:
        checkouts.append(_args)

    event.listen(pool, "checkout", checked_out)
    try:
        with reads_of(uow, "deployments") as deployments, reads_of(uow, "resource_revisions") as revisions:
            await batch.before(new)
    finally:
        event.remove(pool, "checkout", checked_out)
    assert len(checkouts) == 1, "one session for the batch, not one per request"
    assert len(deployments) == 1, "the requests' deployments read together"
    assert len(revisions) == 1, "the revisions the requests name read together"
    assert [(spec.version, dict(spec.resources)) for spec in cluster.applied[-2:]] == [
        ("2.0.0", {"orders-db": {"type": "database", "data": {"url": "postgres://db-a/orders"}, "secret": ["url"]}}),
        ("3.0.0", {"orders-db": {"type": "database", "data": {"url": "postgres://db-a/orders"}, "secret": ["url"]}}),
    ], "each applied with its resources' values, read ahead"


async def test_a_service_catalog_never_changed_is_looked_for_once_per_batch(
    uow: UnitOfWork, cluster: FakeCluster
) -> None:
    await ready(uow, cluster)  # no service.changed: deploy holds no state row for it (enabled)
    await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="alice", uow=uow)
    events = [released_event(version, correlation_id=f"c-{version}") for version in ("1.1.0", "1.2.0")]
    handler = with_prefetch(handlers.prefetch_released, _record_release(uow))

    with reads_of(uow, "deploy_services") as reads:
        await handle_batch(Topic.VERSION_RELEASED.value, _raw(*events), handler, FakeDeadLetters(), uow)

    assert len(reads) == 1, "read ahead once, its absence remembered for the batch"
    requested = await outbox(uow, Topic.DEPLOY_REQUESTED)
    assert [e.data["version"] for e in requested[1:]] == ["1.1.0", "1.2.0"], "enabled: both auto-deployed"
