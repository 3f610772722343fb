"""Deploy's lane (``services.deploy.requests``, ADR 10 revisited): the requests auto-deploy makes
in a batch of releases are applied as that batch commits, not after their round trip through the
broker; their copies from the topic are then skipped. A request another one waits before (one
requested by hand, still in the topic) goes round through the topic, so the cluster sees every
service's requests in the order they were made. Real SQLite; the cluster is a fake that records
what it was asked (the rendered driver's files are not what these tests are about)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from services.deploy import handlers, known_services, requests
from services.deploy.cluster import RolloutStatus, WorkloadSpec
from services.deploy.models import DEPLOY_TABLES
from shared.batches import FollowUp
from shared.bus import with_prefetch
from shared.consume import handle_batch
from shared.events import Envelope, Topic
from shared.outbox import UnitOfWork
from tests.support import KEYRING
from tests.unit.test_deploy_handlers import ENV, PROJECT, SERVICE, FakeCluster, deploy, deployment, outbox, ready
from tests.unit.test_deploy_handlers import released_event as released
from tests.unit.test_deploy_lifecycle import service_changed
from tests.unit.test_deploy_request_batches import _raw
from tests.unit.test_shared import FakeDeadLetters


@pytest.fixture
async def uow(make_uow) -> UnitOfWork:
    return await make_uow("deploy", DEPLOY_TABLES)


@dataclass
class GatedCluster(FakeCluster):
    """Applies only while ``gate`` is open; notes each apply as it starts."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: list[str] = field(default_factory=list)
    waiting: asyncio.Event = field(default_factory=asyncio.Event)  # an apply waits at the gate

    async def apply(self, spec: WorkloadSpec) -> RolloutStatus:
        self.started.append(spec.version)
        if not self.gate.is_set():
            self.waiting.set()
        await self.gate.wait()
        return await super().apply(spec)


async def _auto_deploy_on(uow: UnitOfWork, cluster: FakeCluster) -> None:
    """1.0.0 deployed by hand and applied; the service enabled; auto-deploy on in dev."""
    await ready(uow, cluster)
    await known_services.on_service_changed(service_changed("updated", enabled=True), uow=uow)
    await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="alice", uow=uow)


async def _releases(uow: UnitOfWork, *versions: str) -> None:
    """A batch of ``version.released``, as deploy's consumer of that topic applies it."""

    async def on_released(envelope: Envelope) -> None:
        await handlers.record_released_version(envelope, uow=uow)

    events = [released(version, correlation_id=f"c-{version}") for version in versions]
    await handle_batch(
        Topic.VERSION_RELEASED.value,
        _raw(*events),
        with_prefetch(handlers.prefetch_released, on_released),
        FakeDeadLetters(),
        uow,
    )


def _handed_to(uow: UnitOfWork) -> list[FollowUp]:
    """What deploy's batches hand on once committed, kept here instead of queued for the lane."""
    handed: list[FollowUp] = []
    uow.hand_on(Topic.DEPLOY_REQUESTED, handed.extend)
    return handed


async def _auto_then_by_hand(uow: UnitOfWork, cluster: FakeCluster) -> tuple[list[FollowUp], Envelope, Envelope]:
    """1.1.0 auto-deployed, then deployed by hand with 5 replicas; the lane is handed the auto
    deployment alone (the one made by hand still in the topic). Its hand-over, and both requests."""
    await _auto_deploy_on(uow, cluster)
    handed = _handed_to(uow)
    await _releases(uow, "1.1.0")
    await deploy(uow, "1.1.0", replicas=5)  # by hand, after the auto deployment
    del handed[1:]
    *_, auto, manual = await outbox(uow, Topic.DEPLOY_REQUESTED)
    return handed, auto, manual


async def _running_version(uow: UnitOfWork) -> str | None:
    statuses = await outbox(uow, Topic.DEPLOY_STATUS)
    return statuses[-1].data["version"] if statuses else None


async def test_an_auto_deploy_is_applied_as_its_batch_of_releases_commits_and_its_copy_is_skipped(
    uow: UnitOfWork,
) -> None:
    # "With auto-deploy set, a released version needs no manual deployment."
    cluster = FakeCluster()
    await _auto_deploy_on(uow, cluster)
    lane = requests.DeployRequests(uow=uow, driver=cluster, keyring=KEYRING)
    uow.hand_on(Topic.DEPLOY_REQUESTED, lane.hand_on)
    woken: list[list[str]] = []  # what the cluster had applied each time the relay was woken
    uow.on_outbox_commit(lambda: woken.append([spec.version for spec in cluster.applied]))
    lane.start_lane()
    try:
        await _releases(uow, "1.1.0")
        for _ in range(500):  # the lane runs in a task of its own: wait for it, 5 s at most
            if woken and await _running_version(uow) == "1.1.0":
                break
            await asyncio.sleep(0.01)
    finally:
        await lane.stop_lane()
    assert woken[0] == ["1.0.0", "1.1.0"], (
        "the relay woken once the lane applied the request: the request and its deploy.status go out together"
    )

    _manual, auto = await outbox(uow, Topic.DEPLOY_REQUESTED)
    assert auto.data["trigger"] == "auto" and auto.id in uow.applied_here
    assert [spec.version for spec in cluster.applied] == ["1.0.0", "1.1.0"], "applied by the lane"
    assert (await deployment(uow, auto.data["deployment_id"])).state == "rendered"
    statuses = [(e.data["version"], e.correlation_id) for e in await outbox(uow, Topic.DEPLOY_STATUS)]
    assert statuses == [("1.0.0", "req-1.0.0"), ("1.1.0", "c-1.1.0")], "its deploy.status, in the chain's correlation"

    # its copy from the topic: skipped without a transaction here, and after a restart by the inbox
    for consumer_uow in (uow, UnitOfWork(uow.sessions, source="gantry/deploy")):
        topic = requests.DeployRequests(uow=consumer_uow, driver=cluster, keyring=KEYRING)
        await handle_batch(
            Topic.DEPLOY_REQUESTED.value, _raw(auto), topic.handler, FakeDeadLetters(), consumer_uow, topic
        )
    assert len(cluster.applied) == 2 and len(await outbox(uow, Topic.DEPLOY_STATUS)) == 2, "applied once"


async def test_a_request_made_by_hand_still_in_the_topic_keeps_a_later_auto_deploy_out_of_the_lane(
    uow: UnitOfWork,
) -> None:
    # The cluster sees a service's requests in the order they were made: a scale by hand, then 1.1.0.
    cluster = FakeCluster()
    await _auto_deploy_on(uow, cluster)
    handed = _handed_to(uow)
    by_hand = await deploy(uow, "1.0.0", replicas=4)  # by hand; the lane never took it (full, say)
    handed.clear()
    await _releases(uow, "1.1.0")
    lane = requests.DeployRequests(uow=uow, driver=cluster, keyring=KEYRING)

    assert [done.envelope.data["version"] for done in handed] == ["1.1.0"]
    assert await lane.apply_handed(handed) == [], "left to the topic, behind the request made by hand"
    assert [spec.version for spec in cluster.applied] == ["1.0.0"], "the cluster not touched"

    *_, manual, auto = await outbox(uow, Topic.DEPLOY_REQUESTED)
    assert (manual.data["deployment_id"], auto.data["version"]) == (by_hand.id, "1.1.0")
    topic = requests.DeployRequests(uow=uow, driver=cluster, keyring=KEYRING)
    await handle_batch(Topic.DEPLOY_REQUESTED.value, _raw(manual, auto), topic.handler, FakeDeadLetters(), uow, topic)
    assert [(spec.version, spec.replicas) for spec in cluster.applied[1:]] == [("1.0.0", 4), ("1.1.0", 4)]


async def test_a_request_made_after_one_handed_on_and_not_applied_yet_does_not_keep_it_out_of_the_lane(
    uow: UnitOfWork,
) -> None:
    # Only a request made before holds one back: one made after it is applied after it anyway (the
    # turn), so under load the lane does not hand every request of a busy service to the topic.
    cluster = FakeCluster()
    handed, auto, manual = await _auto_then_by_hand(uow, cluster)
    lane = requests.DeployRequests(uow=uow, driver=cluster, keyring=KEYRING)

    assert [done.id for done in await lane.apply_handed(handed)] == [auto.id], "applied by the lane"
    topic = requests.DeployRequests(uow=uow, driver=cluster, keyring=KEYRING)
    await handle_batch(Topic.DEPLOY_REQUESTED.value, _raw(auto, manual), topic.handler, FakeDeadLetters(), uow, topic)
    assert [(spec.version, spec.replicas) for spec in cluster.applied[1:]] == [
        ("1.1.0", auto.data["replicas"]),
        ("1.1.0", 5),
    ], "in the order they were made, each once"


async def test_the_lane_waits_for_a_batch_from_the_topic_and_never_applies_a_request_after_a_later_one(
    uow: UnitOfWork,
) -> None:
    # While the topic's batch applies the auto deployment's copy and then one made by hand after
    # it, the lane waits its turn; it then finds its request applied and leaves the cluster alone.
    cluster = GatedCluster()
    cluster.gate.set()
    handed, auto, manual = await _auto_then_by_hand(uow, cluster)
    cluster.gate.clear()
    topic = requests.DeployRequests(uow=uow, driver=cluster, keyring=KEYRING)
    lane = requests.DeployRequests(uow=uow, driver=cluster, keyring=KEYRING)
    lane._turn = topic.turn()  # one service, one turn: as the running service's one DeployRequests
    from_topic = asyncio.create_task(
        handle_batch(Topic.DEPLOY_REQUESTED.value, _raw(auto, manual), topic.handler, FakeDeadLetters(), uow, topic)
    )
    await asyncio.wait_for(cluster.waiting.wait(), 5)  # the topic's batch applies the auto deployment's copy
    from_lane = asyncio.create_task(lane.apply_handed(handed))
    for _ in range(20):
        await asyncio.sleep(0)
    assert cluster.started[1:] == ["1.1.0"] and not from_lane.done(), "the lane waits for the topic's batch"
    cluster.gate.set()
    await from_topic
    assert [done.id for done in await from_lane] == [auto.id], "found applied"

    assert [(spec.version, spec.replicas) for spec in cluster.applied[1:]] == [("1.1.0", 2), ("1.1.0", 5)]
    assert cluster.started[1:] == ["1.1.0", "1.1.0"], "nothing applied after the later request"


async def test_a_request_the_lane_fails_to_record_is_left_to_its_copy_from_the_topic(uow: UnitOfWork) -> None:
    cluster = FakeCluster()
    await _auto_deploy_on(uow, cluster)
    handed = _handed_to(uow)
    await _releases(uow, "1.1.0")
    lane = requests.DeployRequests(uow=uow, driver=cluster, keyring=KEYRING)
    recording = lane.record

    async def broken(envelope: Envelope) -> None:
        raise RuntimeError("the database refused the outcome")

    lane.record = broken  # type: ignore[method-assign]
    assert await lane.apply_handed(handed) == []
    [auto] = [done.envelope for done in handed]
    assert auto.id not in uow.applied_here
    assert (await deployment(uow, auto.data["deployment_id"])).state == "requested", "nothing recorded"

    lane.record = recording  # type: ignore[method-assign]
    dead = FakeDeadLetters()
    await handle_batch(Topic.DEPLOY_REQUESTED.value, _raw(auto), lane.handler, dead, uow, lane)
    assert dead.records == [] and (await deployment(uow, auto.data["deployment_id"])).state == "rendered"
    assert [spec.version for spec in cluster.applied] == ["1.0.0", "1.1.0", "1.1.0"], "applied again: harmless"


async def test_a_deployment_requested_by_hand_is_applied_by_the_lane_once_its_request_commits(
    uow: UnitOfWork,
) -> None:
    cluster = FakeCluster()
    await ready(uow, cluster)
    await handlers.record_released_version(released("1.1.0"), uow=uow)
    handed = _handed_to(uow)
    made = await deploy(uow, "1.1.0", replicas=3)  # a REST request's transaction
    lane = requests.DeployRequests(uow=uow, driver=cluster, keyring=KEYRING)

    assert [done.envelope.data["deployment_id"] for done in handed] == [made.id]
    assert [envelope.data["deployment_id"] for envelope in await lane.apply_handed(handed)] == [made.id]
    assert [(spec.version, spec.replicas) for spec in cluster.applied] == [("1.0.0", 2), ("1.1.0", 3)]
    assert (await deployment(uow, made.id)).state == "rendered"


def test_the_lane_runs_where_one_instance_applies_all_of_a_databases_requests() -> None:
    # on PostgreSQL instances share the topic's partitions: every request goes round through it
    assert requests.lane_wanted(create_async_engine("sqlite+aiosqlite:///:memory:"))
    assert not requests.lane_wanted(create_async_engine("postgresql+asyncpg://gantry@127.0.0.1/deploy"))
