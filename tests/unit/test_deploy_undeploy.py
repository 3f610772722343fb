"""Undeploy: the workload leaves the cluster through the same chain as every deploy action
(deploy.requested → worker → driver → deploy.status "removed"); afterwards the running state says
so and the next deployment starts afresh. Use cases on a real SQLite file, a fake cluster; the
rendered driver on real files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.deploy import domain, handlers, views, worker
from services.deploy.cluster import WorkloadSpec
from services.deploy.handlers import Action
from services.deploy.rendered import RenderedManifestsDriver
from services.deploy.undeploy import undeploy
from shared.errors import Conflict, NotFound
from shared.events import Topic
from shared.outbox import UnitOfWork
from tests.unit.test_deploy_handlers import (
    ENV,
    NAMESPACE,
    PROJECT,
    SERVICE,
    FakeCluster,
    cluster,  # noqa: F401 - the fixture
    deploy,
    deployment,
    outbox,
    ready,
    release,
    uow,  # noqa: F401 - the fixture
    work,
)

ACT = Action(PROJECT, SERVICE, ENV, by="dora", correlation_id="c-undeploy")


async def test_undeploy_removes_the_workload_and_the_running_state_says_so(
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await ready(uow, cluster)
    await release(uow, "2.0.0")
    await deploy(uow, "2.0.0", strategy="canary")
    await work(uow, cluster)

    removal = await undeploy(ACT, uow=uow)
    await work(uow, cluster)

    requested = (await outbox(uow, Topic.DEPLOY_REQUESTED))[-1]
    status = (await outbox(uow, Topic.DEPLOY_STATUS))[-1]
    assert (requested.data["action"], requested.correlation_id) == ("undeploy", "c-undeploy")
    assert (status.data["state"], status.data["desired"], status.data["deployment_id"]) == ("removed", 0, removal.id)
    assert cluster.removed == [(PROJECT, SERVICE, ENV, NAMESPACE)]
    recorded = await deployment(uow, removal.id)
    assert (recorded.action, recorded.state, recorded.by, recorded.version) == ("undeploy", "removed", "dora", "1.0.0")
    assert recorded.finished_at is not None
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert state.stable is None and state.canary is None and state.deploying == []
    assert state.removed is not None and (state.removed.deployment_id, state.removed.by) == (removal.id, "dora")
    with pytest.raises(Conflict, match="no stable deployment"):
        await handlers.scale(ACT, 2, uow=uow)


async def test_there_must_be_something_to_remove(uow: UnitOfWork, cluster: FakeCluster) -> None:  # noqa: F811
    with pytest.raises(NotFound, match="has no version released to dev"):
        await undeploy(ACT, uow=uow)
    await release(uow, "1.0.0")
    with pytest.raises(Conflict, match="shop/orders was never deployed to dev: there is nothing to remove"):
        await undeploy(ACT, uow=uow)

    await ready(uow, cluster)
    await undeploy(ACT, uow=uow)
    await work(uow, cluster)
    with pytest.raises(Conflict, match="already removed from dev: deploy it again"):
        await undeploy(ACT, uow=uow)


async def test_a_failed_deployment_can_be_removed(uow: UnitOfWork, cluster: FakeCluster) -> None:  # noqa: F811
    """A first rollout that failed records nothing running, yet may have left objects behind."""
    await ready(uow, cluster)
    await undeploy(ACT, uow=uow)
    await work(uow, cluster)
    cluster.state = "failed"
    await deploy(uow, "1.0.0")
    await work(uow, cluster)
    cluster.state = "rendered"

    removal = await undeploy(ACT, uow=uow)
    await work(uow, cluster)

    assert (await deployment(uow, removal.id)).state == "removed" and len(cluster.removed) == 2


async def test_a_rollout_still_followed_ends_when_its_workload_is_removed(
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    cluster.state = "progressing"
    first = await ready(uow, cluster)

    removal = await undeploy(ACT, uow=uow)
    await work(uow, cluster)

    ended = await deployment(uow, first.id)
    assert (ended.state, ended.message) == ("failed", f"superseded by undeploy {removal.id}")
    statuses = [(e.data["deployment_id"], e.data["state"]) for e in await outbox(uow, Topic.DEPLOY_STATUS)]
    assert statuses[-2:] == [(first.id, "failed"), (removal.id, "removed")], "removed comes last: nothing runs"
    assert await worker.follow_rollout(first.id, uow=uow, driver=cluster), "nothing left to follow"


async def test_a_failed_removal_leaves_what_runs_and_says_why(uow: UnitOfWork, cluster: FakeCluster) -> None:  # noqa: F811
    await ready(uow, cluster)
    cluster.fail_with = RuntimeError("forbidden: deployments.apps is forbidden")

    removal = await undeploy(ACT, uow=uow)
    await work(uow, cluster)

    recorded = await deployment(uow, removal.id)
    assert recorded.state == "failed" and "undeploy failed: forbidden" in recorded.message
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert state.stable is not None and state.stable.state == "failed" and state.removed is None
    cluster.fail_with = None
    await undeploy(ACT, uow=uow)  # tried again
    await work(uow, cluster)
    assert (await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)).removed is not None


async def test_after_undeploy_a_new_deployment_starts_afresh(uow: UnitOfWork, cluster: FakeCluster) -> None:  # noqa: F811
    await ready(uow, cluster)  # two replicas, orders-db
    await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="dora", uow=uow)
    await undeploy(ACT, uow=uow)
    await work(uow, cluster)

    await release(uow, "2.0.0")  # auto-deploy waits for a deployment by hand
    with pytest.raises(Conflict, match="only after a first manual deployment"):
        await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="dora", uow=uow)
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert state.stable is None and state.deploying == [] and state.resources == ["orders-db"]

    again = await deploy(uow, "2.0.0")  # the last choice of resources is offered again
    await work(uow, cluster)
    assert (again.resources, again.replicas) == (["orders-db"], 1)
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert state.stable is not None and state.stable.version == "2.0.0" and state.removed is None

    await release(uow, "3.0.0")  # the rule applies again after that manual deployment
    history = await views.list_deployments(PROJECT, SERVICE, ENV, uow=uow)
    assert (history[0].version, history[0].trigger) == ("3.0.0", "auto")


def workload(namespace: str, service: str, track: str = "stable") -> WorkloadSpec:
    return WorkloadSpec(
        project="shop",
        service=service,
        environment="staging",
        namespace=namespace,
        version="v1",
        image=f"registry.local/shop/{service}:v1",
        replicas=1,
        track=track,
    )


async def test_the_rendered_driver_removes_the_services_files_only(tmp_path: Path) -> None:
    driver = RenderedManifestsDriver(tmp_path)
    for spec in (
        workload("shop-staging", "web"),
        workload("shop-staging", "web", "canary"),
        workload("shop-staging", "api"),
    ):
        await driver.apply(spec)
    folder = tmp_path / "staging" / "shop-staging"
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "shop-web", "labels": {"app": "shop-web"}},
    }
    (folder / "shop-web-ingress.yaml").write_text(yaml.safe_dump(ingress))
    (folder / "notes.yaml").write_text("not: [a manifest")

    await driver.remove("shop", "web", "staging", "shop-staging")
    await driver.remove("shop", "web", "staging", "shop-staging")  # already gone: no error

    assert sorted(p.name for p in folder.iterdir()) == ["notes.yaml", "shop-api.yaml"]
    assert await driver.status("shop", "web", "staging", "shop-staging") is None
    assert await driver.status("shop", "api", "staging", "shop-staging") is not None
    await driver.remove("shop", "web", "nowhere", "nothing-here")  # a folder never written: no error


def test_what_may_be_removed_as_pure_functions() -> None:
    for latest in (("deploy", "succeeded"), ("deploy", "failed"), ("abort", "succeeded"), ("undeploy", "failed")):
        domain.require_workload_to_remove("s/x", "dev", latest)
        assert not domain.workload_removed(latest)
    assert domain.workload_removed(("undeploy", "removed"))
    with pytest.raises(Conflict, match="never deployed"):
        domain.require_workload_to_remove("s/x", "dev", None)
    with pytest.raises(Conflict, match="already removed"):
        domain.require_workload_to_remove("s/x", "dev", ("undeploy", "removed"))
