"""Deploy's use cases and worker on a real SQLite file, with a fake cluster that records calls.

Rules quoted from the guide (seed/README.md, "Deploy"): "The first deployment needs the resources
filled in by hand; later deployments show the resources chosen last time. Choose resources
carefully: a wrong choice can lose database data." "The desired count cannot be 0." "Grey
(canary) deployment verifies a version before it is converted into the formal deployment."
"With auto-deploy set, a released version needs no manual deployment."
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from services.deploy import environments, handlers, requests, views, worker
from services.deploy.app import build_driver
from services.deploy.cluster import RolloutStatus, WorkloadSpec
from services.deploy.handlers import Action
from services.deploy.kubernetes import KubernetesDriver
from services.deploy.models import DEPLOY_TABLES, Deployment, DeploymentCreate, ResourceCreate
from services.deploy.rendered import RenderedManifestsDriver
from shared.errors import Conflict, InvalidInput, NotFound
from shared.events import Envelope, EnvironmentChanged, Topic, VersionReleased, new_event
from shared.outbox import OutboxMessage, UnitOfWork, decode_envelope
from shared.settings import Settings
from tests.support import KEYRING

SERVICE_ID = "svc-orders-1"
PROJECT, SERVICE, ENV, NAMESPACE = "shop", "orders", "dev", "shop-dev"


@dataclass
class FakeCluster:
    """A ClusterDriver that records what it was asked and answers with ``state``."""

    state: str = "rendered"
    fail_with: Exception | None = None
    applied: list[WorkloadSpec] = field(default_factory=list)
    deleted: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    statuses: dict[str, RolloutStatus] = field(default_factory=dict)
    removed: list[tuple[str, str, str, str]] = field(default_factory=list)

    async def apply(self, spec: WorkloadSpec) -> RolloutStatus:
        if self.fail_with is not None:
            raise self.fail_with
        self.applied.append(spec)
        status = RolloutStatus(self.state, spec.replicas, 0, 0, 0, f"{spec.track} {spec.version}")
        self.statuses[spec.track] = status
        return status

    async def status(
        self, project: str, service: str, environment: str, namespace: str, track: str = "stable"
    ) -> RolloutStatus | None:
        return self.statuses.get(track)

    async def delete(self, project: str, service: str, environment: str, namespace: str, track: str = "stable") -> None:
        self.deleted.append((project, service, environment, namespace, track))
        self.statuses.pop(track, None)

    async def remove(self, project: str, service: str, environment: str, namespace: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.removed.append((project, service, environment, namespace))
        self.statuses.clear()


@pytest.fixture
async def uow(make_uow) -> UnitOfWork:
    return await make_uow("deploy", DEPLOY_TABLES)


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


def released_event(version: str, environment: str = ENV, correlation_id: str = "chain-1") -> Envelope:
    data = VersionReleased(
        service_id=SERVICE_ID,
        project=PROJECT,
        service=SERVICE,
        environment=environment,
        namespace=NAMESPACE,
        version=version,
        image=f"registry.local/shop/orders:{version}",
        trigger="manual",
        by="alice",
    )
    return new_event(
        Topic.VERSION_RELEASED,
        data,
        source="gantry/release",
        subject=f"{PROJECT}/{SERVICE}",
        correlation_id=correlation_id,
    )


async def release(uow: UnitOfWork, *versions: str, environment: str = ENV) -> None:
    for version in versions:
        await handlers.record_released_version(released_event(version, environment), uow=uow)


async def announce(uow: UnitOfWork, environment: str = ENV) -> None:
    """Release announces the environment (``environment.changed``), as it does when one is made."""
    data = EnvironmentChanged(code=environment, name=environment, tier="dev", namespace=NAMESPACE, change="created")
    event = new_event(Topic.ENVIRONMENT_CHANGED, data, source="gantry/release", subject=environment)
    await environments.on_environment_changed(event, uow=uow)


async def add_resource(uow: UnitOfWork, name: str, type_: str, **data: Any) -> None:
    await handlers.create_resource(
        ENV, ResourceCreate(name=name, type=type_, data=data), by="ops", uow=uow, keyring=KEYRING
    )


async def deploy(uow: UnitOfWork, version: str, **fields: Any) -> Deployment:
    body = {"project": PROJECT, "service": SERVICE, "environment": ENV, "version": version}
    return await handlers.request_deployment(
        DeploymentCreate(**(body | fields)), by="alice", correlation_id=f"req-{version}", uow=uow
    )


async def outbox(uow: UnitOfWork, topic: Topic) -> list[Envelope]:
    async with uow.sessions() as session:
        rows = await session.exec(
            select(OutboxMessage).where(OutboxMessage.topic == topic.value).order_by(col(OutboxMessage.id))
        )
        return [decode_envelope(row.payload.encode()) for row in rows.all()]


async def work(uow: UnitOfWork, cluster: FakeCluster) -> None:
    """Deliver every deploy.requested queued so far to the worker (again: a harmless redelivery)."""
    for envelope in await outbox(uow, Topic.DEPLOY_REQUESTED):
        await requests.apply_deploy_request(envelope, uow=uow, driver=cluster, keyring=KEYRING)


async def deployment(uow: UnitOfWork, deployment_id: str) -> Deployment:
    async with uow.sessions() as session:
        found = await session.get(Deployment, deployment_id)
    assert found is not None
    return found


async def ready(uow: UnitOfWork, cluster: FakeCluster, version: str = "1.0.0") -> Deployment:
    """A released version, a database resource and a first manual deployment, applied."""
    await release(uow, version)
    await add_resource(uow, "orders-db", "database", url="postgres://db-a/orders")
    first = await deploy(uow, version, resources=["orders-db"], replicas=2)
    await work(uow, cluster)
    return first


# --- resources ----------------------------------------------------------------------------------


async def test_resources_are_defined_per_environment(uow: UnitOfWork) -> None:
    with pytest.raises(NotFound, match="environment 'dev' does not exist"):
        await add_resource(uow, "orders-db", "database", url="postgres://db/orders")
    await announce(uow)
    await add_resource(uow, "orders-db", "database", url="postgres://db/orders", password="pw")
    await add_resource(uow, "cache", "cache", host="redis")

    assert [r.name for r in await views.list_resources(ENV, uow=uow)] == ["cache", "orders-db"]
    with pytest.raises(NotFound, match="environment 'prod' does not exist"):
        await views.list_resources("prod", uow=uow)
    with pytest.raises(Conflict, match="already exists"):
        await add_resource(uow, "cache", "cache")
    with pytest.raises(InvalidInput, match="resource name"):
        await add_resource(uow, "Orders DB", "database")


# --- deploying ----------------------------------------------------------------------------------


async def test_only_versions_released_to_the_environment_can_be_deployed(uow: UnitOfWork) -> None:
    await release(uow, "1.0.0", environment="test")
    await release(uow, "0.9.0")

    with pytest.raises(Conflict, match="release version 1.0.0 to dev first"):
        await deploy(uow, "1.0.0", resources=[])


async def test_the_first_deployment_must_select_its_resources(uow: UnitOfWork) -> None:
    await release(uow, "1.0.0", "1.1.0")
    await add_resource(uow, "orders-db", "database", url="postgres://db/orders")

    must_select = "the first deployment of shop/orders to dev must select its resources"
    with pytest.raises(InvalidInput, match=must_select):
        await deploy(uow, "1.0.0")
    first = await deploy(uow, "1.0.0", resources=["orders-db"])
    later = await deploy(uow, "1.1.0")

    assert later.resources == first.resources == ["orders-db"]
    requested = (await outbox(uow, Topic.DEPLOY_REQUESTED))[-1]
    assert requested.data["resources"] == {"orders-db": 1}  # names and revisions, never values
    assert requested.correlation_id == "req-1.1.0"
    assert requested.subject == "shop/orders"


async def test_unknown_resources_are_refused(uow: UnitOfWork) -> None:
    await release(uow, "1.0.0")
    with pytest.raises(InvalidInput, match="unknown resource"):
        await deploy(uow, "1.0.0", resources=["nowhere-db"])


async def test_changing_the_database_resource_needs_a_confirmation(uow: UnitOfWork, cluster: FakeCluster) -> None:
    await ready(uow, cluster)
    await add_resource(uow, "other-db", "database", url="postgres://db-b/orders")
    await add_resource(uow, "cache", "cache", host="redis")

    with pytest.raises(Conflict, match="changing the database resource can lose data: resend"):
        await deploy(uow, "1.0.0", resources=["other-db"])
    with pytest.raises(Conflict, match="confirm_resource_change=true"):
        await deploy(uow, "1.0.0", resources=["cache"])
    added = await deploy(uow, "1.0.0", resources=["orders-db", "cache"])  # keeps the database
    swapped = await deploy(uow, "1.0.0", resources=["other-db", "cache"], confirm_resource_change=True)

    assert added.resources == ["orders-db", "cache"]
    assert swapped.resources == ["other-db", "cache"]


async def test_the_desired_count_cannot_be_zero(uow: UnitOfWork, cluster: FakeCluster) -> None:
    await ready(uow, cluster)

    with pytest.raises(InvalidInput, match="the desired count cannot be 0"):
        await deploy(uow, "1.0.0", replicas=0)
    with pytest.raises(InvalidInput, match="the desired count cannot be 0"):
        await handlers.scale(Action(PROJECT, SERVICE, ENV, by="alice", correlation_id="c"), 0, uow=uow)


async def test_scaling_deploys_the_same_version_with_a_new_count(uow: UnitOfWork, cluster: FakeCluster) -> None:
    await ready(uow, cluster)

    scaled = await handlers.scale(Action(PROJECT, SERVICE, ENV, by="bob", correlation_id="c"), 3, uow=uow)
    await work(uow, cluster)

    assert (scaled.action, scaled.version, scaled.replicas) == ("scale", "1.0.0", 3)
    assert cluster.applied[-1].replicas == 3
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert state.stable is not None and state.stable.replicas == 3


async def test_scaling_needs_a_running_deployment(uow: UnitOfWork) -> None:
    await release(uow, "1.0.0")
    with pytest.raises(Conflict, match="has no stable deployment in dev"):
        await handlers.scale(Action(PROJECT, SERVICE, ENV, by="bob", correlation_id="c"), 2, uow=uow)
    with pytest.raises(NotFound, match="release it to prod first"):
        await handlers.scale(Action(PROJECT, SERVICE, "prod", by="bob", correlation_id="c"), 2, uow=uow)


# --- canary -------------------------------------------------------------------------------------


async def test_a_canary_needs_a_stable_deployment(uow: UnitOfWork) -> None:
    await release(uow, "1.0.0")
    with pytest.raises(Conflict, match="a canary runs beside the stable deployment"):
        await deploy(uow, "1.0.0", resources=[], strategy="canary")


async def test_a_canary_runs_beside_stable_then_is_promoted(uow: UnitOfWork, cluster: FakeCluster) -> None:
    await ready(uow, cluster)
    await release(uow, "2.0.0")

    await deploy(uow, "2.0.0", strategy="canary", replicas=1)
    await work(uow, cluster)
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert state.stable is not None and state.canary is not None
    assert (state.stable.version, state.canary.version) == ("1.0.0", "2.0.0")
    assert cluster.applied[-1].track == "canary"

    promoted = await handlers.promote_canary(Action(PROJECT, SERVICE, ENV, by="alice", correlation_id="c"), uow=uow)
    await work(uow, cluster)

    assert (promoted.action, promoted.track, promoted.replicas) == ("promote", "stable", 2)
    assert (cluster.applied[-1].track, cluster.applied[-1].version) == ("stable", "2.0.0")
    assert cluster.deleted[-1][-1] == "canary"
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert state.stable is not None and state.stable.version == "2.0.0"
    assert state.canary is None


async def test_an_aborted_canary_is_removed_and_stable_keeps_serving(uow: UnitOfWork, cluster: FakeCluster) -> None:
    await ready(uow, cluster)
    await release(uow, "2.0.0")
    await deploy(uow, "2.0.0", strategy="canary")
    await work(uow, cluster)

    aborted = await handlers.abort_canary(Action(PROJECT, SERVICE, ENV, by="alice", correlation_id="c"), uow=uow)
    await work(uow, cluster)

    assert (await deployment(uow, aborted.id)).state == "succeeded"
    assert cluster.deleted == [(PROJECT, SERVICE, ENV, NAMESPACE, "canary")]
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert state.canary is None and state.stable is not None and state.stable.version == "1.0.0"
    with pytest.raises(Conflict, match="no canary deployment"):
        await handlers.abort_canary(Action(PROJECT, SERVICE, ENV, by="alice", correlation_id="c"), uow=uow)


async def canary_on_another_database(uow: UnitOfWork, cluster: FakeCluster) -> None:
    """Stable 1.0.0 on orders-db; a canary 2.0.0 on other-db, confirmed."""
    await ready(uow, cluster)
    await release(uow, "2.0.0")
    await add_resource(uow, "other-db", "database", url="postgres://db-b/orders")
    await deploy(uow, "2.0.0", strategy="canary", resources=["other-db"], confirm_resource_change=True)
    await work(uow, cluster)


async def test_an_aborted_canary_on_another_database_leaves_the_guard_on_stables_choice(
    uow: UnitOfWork, cluster: FakeCluster
) -> None:
    """ "A wrong choice can lose database data": the canary's confirmed database is not stable's."""
    await canary_on_another_database(uow, cluster)
    await handlers.abort_canary(Action(PROJECT, SERVICE, ENV, by="alice", correlation_id="c"), uow=uow)
    await work(uow, cluster)

    again = await deploy(uow, "2.0.0")  # no resources named: the last stable choice
    assert again.resources == ["orders-db"]
    with pytest.raises(Conflict, match="confirm_resource_change=true"):
        await deploy(uow, "2.0.0", resources=["other-db"])


async def test_a_promoted_canary_makes_its_resources_the_last_choice(uow: UnitOfWork, cluster: FakeCluster) -> None:
    await canary_on_another_database(uow, cluster)
    await handlers.promote_canary(Action(PROJECT, SERVICE, ENV, by="alice", correlation_id="c"), uow=uow)
    await work(uow, cluster)
    assert (await deploy(uow, "2.0.0")).resources == ["other-db"]


# --- rollback and history -----------------------------------------------------------------------


async def test_rollback_defaults_to_the_previous_version(uow: UnitOfWork, cluster: FakeCluster) -> None:
    await ready(uow, cluster)
    with pytest.raises(Conflict, match="no earlier version"):
        await handlers.rollback(Action(PROJECT, SERVICE, ENV, by="a", correlation_id="c"), None, uow=uow)
    await release(uow, "1.1.0", "1.2.0")
    for version in ("1.1.0", "1.2.0"):
        await deploy(uow, version)
        await work(uow, cluster)

    back = await handlers.rollback(Action(PROJECT, SERVICE, ENV, by="a", correlation_id="c"), None, uow=uow)
    await work(uow, cluster)
    named = await handlers.rollback(Action(PROJECT, SERVICE, ENV, by="a", correlation_id="c"), "1.0.0", uow=uow)

    assert (back.action, back.version, back.replicas) == ("rollback", "1.1.0", 2)
    assert named.version == "1.0.0"
    with pytest.raises(Conflict, match="release version 9.9.9 to dev first"):
        await handlers.rollback(Action(PROJECT, SERVICE, ENV, by="a", correlation_id="c"), "9.9.9", uow=uow)


async def test_history_is_newest_first_with_who_triggered_it(uow: UnitOfWork, cluster: FakeCluster) -> None:
    await ready(uow, cluster)
    await handlers.scale(Action(PROJECT, SERVICE, ENV, by="bob", correlation_id="c"), 1, uow=uow)

    history = await views.list_deployments(PROJECT, SERVICE, ENV, uow=uow)

    assert [(d.action, d.by, d.trigger) for d in history] == [
        ("scale", "bob", "manual"),
        ("deploy", "alice", "manual"),
    ]


# --- the worker ---------------------------------------------------------------------------------


async def test_the_worker_applies_records_and_reports(uow: UnitOfWork, cluster: FakeCluster) -> None:
    first = await ready(uow, cluster)

    spec = cluster.applied[0]
    assert (spec.version, spec.replicas, spec.track) == ("1.0.0", 2, "stable")
    assert spec.namespace == NAMESPACE
    assert spec.image == "registry.local/shop/orders:1.0.0"
    assert spec.resources == {  # read from the revision the request names, opened
        "orders-db": {"type": "database", "data": {"url": "postgres://db-a/orders"}, "secret": ["url"]}
    }
    recorded = await deployment(uow, first.id)
    assert (recorded.state, recorded.desired) == ("rendered", 2)
    assert recorded.finished_at is not None
    [requested] = await outbox(uow, Topic.DEPLOY_REQUESTED)
    [status] = await outbox(uow, Topic.DEPLOY_STATUS)
    assert status.data["state"] == "rendered" and status.data["deployment_id"] == first.id
    assert status.causation_id == requested.id
    assert status.correlation_id == requested.correlation_id


async def test_the_same_request_twice_is_applied_once(uow: UnitOfWork, cluster: FakeCluster) -> None:
    await ready(uow, cluster)

    await work(uow, cluster)
    await work(uow, cluster)

    assert len(cluster.applied) == 1
    assert len(await outbox(uow, Topic.DEPLOY_STATUS)) == 1


async def test_a_cluster_failure_fails_the_deployment_with_its_reason(uow: UnitOfWork, cluster: FakeCluster) -> None:
    first = await ready(uow, cluster)
    await release(uow, "2.0.0")
    cluster.fail_with = RuntimeError("namespace shop-dev is terminating")

    second = await deploy(uow, "2.0.0")
    await work(uow, cluster)

    failed = await deployment(uow, second.id)
    assert failed.state == "failed"
    assert "namespace shop-dev is terminating" in failed.message
    status = (await outbox(uow, Topic.DEPLOY_STATUS))[-1]
    assert status.data["state"] == "failed"
    assert "namespace shop-dev is terminating" in status.data["message"]
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert state.stable is not None
    assert (state.stable.version, state.stable.deployment_id) == ("1.0.0", first.id)
    assert state.stable.state == "failed" and "2.0.0 failed" in state.stable.message


async def test_a_request_unknown_to_this_database_is_recorded_from_the_event(
    uow: UnitOfWork, cluster: FakeCluster, make_uow, tmp_path: Path
) -> None:
    await ready(uow, cluster)
    [requested] = await outbox(uow, Topic.DEPLOY_REQUESTED)
    other = await make_uow("deploy", DEPLOY_TABLES, home=tmp_path / "other")
    recorded = await requests.apply_deploy_request(requested, uow=other, driver=cluster, keyring=KEYRING)
    assert recorded is not None and recorded.by == "alice"
    # the event names the resources' revisions, not their values, and this database has none of them
    assert recorded.state == "failed"
    assert "resource 'orders-db' (revision 1) of environment dev is not in this deploy database" in recorded.message


async def test_a_progressing_rollout_is_followed_until_it_finishes(uow: UnitOfWork, cluster: FakeCluster) -> None:
    cluster.state = "progressing"
    followed: list[str] = []
    await release(uow, "1.0.0")
    first = await deploy(uow, "1.0.0", resources=[])
    [requested] = await outbox(uow, Topic.DEPLOY_REQUESTED)
    await requests.apply_deploy_request(requested, uow=uow, driver=cluster, keyring=KEYRING, follow=followed.append)
    assert followed == [first.id]
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert [d.version for d in state.deploying] == ["1.0.0"]

    assert not await worker.follow_rollout(first.id, uow=uow, driver=cluster)  # nothing changed
    cluster.statuses["stable"] = RolloutStatus("succeeded", 1, 1, 1, 1, "rollout complete")
    assert await worker.follow_rollout(first.id, uow=uow, driver=cluster)

    assert (await deployment(uow, first.id)).state == "succeeded"
    states = [e.data["state"] for e in await outbox(uow, Topic.DEPLOY_STATUS)]
    assert states == ["progressing", "succeeded"]
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert state.deploying == []
    assert state.stable is not None and (state.stable.desired, state.stable.available) == (1, 1)


async def test_a_rollout_that_never_finishes_fails_at_its_deadline(uow: UnitOfWork, cluster: FakeCluster) -> None:
    cluster.state = "progressing"
    await release(uow, "1.0.0")
    first = await deploy(uow, "1.0.0", resources=[])
    await work(uow, cluster)

    assert await worker.follow_rollout(first.id, uow=uow, driver=cluster, timed_out=True)

    recorded = await deployment(uow, first.id)
    assert recorded.state == "failed" and "not finished in time" in recorded.message


# --- auto-deploy --------------------------------------------------------------------------------


async def test_auto_deploy_applies_only_after_a_first_manual_deployment(uow: UnitOfWork, cluster: FakeCluster) -> None:
    await release(uow, "1.0.0")
    with pytest.raises(Conflict, match="auto-deploy applies only after a first manual deployment"):
        await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="alice", uow=uow)
    await release(uow, "1.1.0")
    assert await outbox(uow, Topic.DEPLOY_REQUESTED) == []


async def test_with_auto_deploy_a_released_version_is_deployed(uow: UnitOfWork, cluster: FakeCluster) -> None:
    await ready(uow, cluster)
    rule = await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="alice", uow=uow)
    assert rule.enabled

    event = released_event("1.1.0", correlation_id="pipeline-77")
    auto = await handlers.record_released_version(event, uow=uow)
    again = await handlers.record_released_version(event, uow=uow)  # redelivery
    await work(uow, cluster)

    assert auto is not None and again is None
    assert (auto.trigger, auto.by, auto.version) == ("auto", "auto-deploy", "1.1.0")
    assert (auto.replicas, auto.resources) == (2, ["orders-db"])
    requested = (await outbox(uow, Topic.DEPLOY_REQUESTED))[-1]
    assert requested.causation_id == event.id and requested.correlation_id == "pipeline-77"
    assert requested.data["trigger"] == "auto"
    assert (cluster.applied[-1].version, cluster.applied[-1].replicas) == ("1.1.0", 2)
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert state.auto_deploy and state.resources == ["orders-db"]
    assert state.stable is not None and state.stable.version == "1.1.0"


async def test_auto_deploy_skips_the_version_already_running_but_retries_a_failed_one(
    uow: UnitOfWork, cluster: FakeCluster
) -> None:
    await ready(uow, cluster)
    await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="alice", uow=uow)
    before = len(await outbox(uow, Topic.DEPLOY_REQUESTED))
    assert await handlers.record_released_version(released_event("1.0.0"), uow=uow) is None
    assert len(await outbox(uow, Topic.DEPLOY_REQUESTED)) == before, "re-releasing what runs deploys nothing"

    cluster.fail_with = RuntimeError("quota exceeded")  # the running version's last change failed
    await handlers.scale(Action(PROJECT, SERVICE, ENV, by="alice", correlation_id="s"), 3, uow=uow)
    await work(uow, cluster)
    cluster.fail_with = None
    retried = await handlers.record_released_version(released_event("1.0.0", correlation_id="again"), uow=uow)
    assert retried is not None and retried.trigger == "auto" and retried.version == "1.0.0"


async def test_auto_deploy_off_or_other_environment_deploys_nothing(uow: UnitOfWork, cluster: FakeCluster) -> None:
    await ready(uow, cluster)
    await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="alice", uow=uow)

    assert await handlers.record_released_version(released_event("1.1.0", "prod"), uow=uow) is None
    await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, False, by="alice", uow=uow)
    assert await handlers.record_released_version(released_event("1.2.0"), uow=uow) is None
    assert len(await outbox(uow, Topic.DEPLOY_REQUESTED)) == 1


# --- composition ------------------------------------------------------------------------------


def test_the_driver_is_chosen_by_the_kubeconfig(tmp_path: Path) -> None:
    driver = build_driver(Settings(home=tmp_path, secret="s", kubeconfig=None))
    assert isinstance(driver, RenderedManifestsDriver)
    assert driver.root == tmp_path / "manifests"
    with pytest.raises(RuntimeError, match="not a file"):
        build_driver(Settings(home=tmp_path, secret="s", kubeconfig=str(tmp_path / "kubeconfig")))
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    kube = build_driver(
        Settings(home=tmp_path, secret="s", kubeconfig=str(tmp_path / "kubeconfig"), progress_deadline_seconds=30)
    )
    assert isinstance(kube, KubernetesDriver) and kube.progress_deadline_seconds == 30
