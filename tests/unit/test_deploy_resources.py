"""Resources over their life: each change a new revision, every revision kept, what runs keeps the
revision it was deployed with, deletion refused while something runs with it, each change
announced without its values. Deploy's use cases on a real SQLite file, a fake cluster."""

from __future__ import annotations

import json

import pytest

from services.deploy import domain, handlers, resources, views
from services.deploy.handlers import Action
from services.deploy.models import Resource, ResourceCreate, ResourceUpdate
from services.deploy.undeploy import undeploy
from shared.errors import Conflict, NotFound
from shared.events import Topic
from shared.outbox import UnitOfWork
from tests.support import KEYRING
from tests.unit.test_deploy_handlers import (
    ENV,
    PROJECT,
    SERVICE,
    FakeCluster,
    add_resource,
    announce,
    cluster,  # noqa: F401 - the fixture
    deploy,
    outbox,
    ready,
    release,
    uow,  # noqa: F401 - the fixture
    work,
)

ACT = Action(PROJECT, SERVICE, ENV, by="dora", correlation_id="c-1")


async def update(uow: UnitOfWork, name: str, type_: str, **data: object) -> Resource:  # noqa: F811
    return await resources.update_resource(
        ENV, name, ResourceUpdate(type=type_, data=data), by="dora", uow=uow, keyring=KEYRING
    )


async def test_each_update_is_a_new_revision_and_every_revision_is_kept(uow: UnitOfWork) -> None:  # noqa: F811
    await announce(uow)
    await add_resource(uow, "cache", "cache", host="redis-a")

    second = await update(uow, "cache", "cache", host="redis-b")
    same = await update(uow, "cache", "cache", host="redis-b")
    third = await update(uow, "cache", "queue", host="redis-c", port=6379)
    detail = await resources.read_resource(ENV, "cache", uow=uow)

    assert (second.revision, same.revision, third.revision) == (2, 2, 3), "the same content again: no revision"
    assert (detail.revision, detail.type, detail.data) == (3, "queue", {"host": "redis-c", "port": 6379})
    assert detail.updated_by == "dora" and detail.created_by == "ops"
    assert [(r.revision, r.data["host"], r.created_by) for r in detail.revisions] == [
        (1, "redis-a", "ops"),
        (2, "redis-b", "dora"),
        (3, "redis-c", "dora"),
    ]


async def test_every_change_is_announced_with_its_revision_never_its_values(uow: UnitOfWork) -> None:  # noqa: F811
    await announce(uow)
    await add_resource(uow, "orders-db", "database", url="postgres://db/orders", password="s3cret")
    await update(uow, "orders-db", "database", url="postgres://db2/orders", password="s3cret")
    await resources.delete_resource(ENV, "orders-db", uow=uow, correlation_id="ticket-9")

    events = await outbox(uow, Topic.RESOURCE_CHANGED)
    assert [(e.data["change"], e.data["revision"]) for e in events] == [("created", 1), ("updated", 2), ("deleted", 2)]
    assert {e.subject for e in events} == {f"{ENV}/orders-db"}
    assert events[-1].correlation_id == "ticket-9"
    payloads = json.dumps([e.data for e in events])
    assert "s3cret" not in payloads and "postgres://" not in payloads


async def test_revision_numbers_are_never_reused_after_a_delete(uow: UnitOfWork) -> None:  # noqa: F811
    await announce(uow)
    await add_resource(uow, "cfg", "config", level="info")
    await update(uow, "cfg", "config", level="debug")
    await resources.delete_resource(ENV, "cfg", uow=uow)
    with pytest.raises(NotFound, match="resource 'cfg' does not exist in environment dev"):
        await resources.read_resource(ENV, "cfg", uow=uow)

    again = await resources.create_resource(
        ENV, ResourceCreate(name="cfg", type="config", data={"level": "warn"}), by="ops", uow=uow, keyring=KEYRING
    )
    detail = await resources.read_resource(ENV, "cfg", uow=uow)

    assert again.revision == 3
    assert [(r.revision, r.data["level"]) for r in detail.revisions] == [(1, "info"), (2, "debug"), (3, "warn")]


async def test_a_resource_made_before_revisions_were_kept_gets_its_history(uow: UnitOfWork) -> None:  # noqa: F811
    await announce(uow)
    async with uow.begin() as session:  # a row as an earlier Gantry wrote it: no revision rows
        session.add(Resource(environment=ENV, name="cfg", type="config", data={"level": "info"}, created_by="old"))

    shown = await resources.read_resource(ENV, "cfg", uow=uow)
    await update(uow, "cfg", "config", level="debug")
    detail = await resources.read_resource(ENV, "cfg", uow=uow)

    assert [(r.revision, r.created_by) for r in shown.revisions] == [(1, "old")]
    assert [(r.revision, r.data["level"], r.created_by) for r in detail.revisions] == [
        (1, "info", "old"),
        (2, "debug", "dora"),
    ]


async def test_a_resource_of_an_unknown_environment_is_not_found(uow: UnitOfWork) -> None:  # noqa: F811
    body = ResourceCreate(name="cfg", type="config", data={})
    with pytest.raises(NotFound, match="environment 'nowhere' does not exist"):
        await resources.create_resource("nowhere", body, by="ops", uow=uow, keyring=KEYRING)
    for attempt in (
        resources.read_resource("nowhere", "cfg", uow=uow),
        resources.update_resource("nowhere", "cfg", ResourceUpdate(type="config"), by="ops", uow=uow, keyring=KEYRING),
        resources.delete_resource("nowhere", "cfg", uow=uow),
    ):
        with pytest.raises(NotFound, match="environment 'nowhere' does not exist"):
            await attempt

    await release(uow, "1.0.0", environment="qa")  # released to, never announced: it exists
    created = await resources.create_resource("qa", body, by="ops", uow=uow, keyring=KEYRING)
    assert (created.environment, created.revision) == ("qa", 1)


async def test_what_runs_keeps_its_revision_until_it_is_deployed_again(
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await announce(uow)
    first = await ready(uow, cluster)
    await update(uow, "orders-db", "database", url="postgres://db-b/orders")

    scaled = await handlers.scale(ACT, 3, uow=uow)
    await work(uow, cluster)
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)

    assert first.resource_revisions == scaled.resource_revisions == {"orders-db": 1}
    assert cluster.applied[-1].resources["orders-db"]["data"] == {"url": "postgres://db-a/orders"}
    assert state.stable is not None and state.stable.resource_revisions == {"orders-db": 1}

    redeployed = await deploy(uow, "1.0.0", confirm_resource_change=True)
    await work(uow, cluster)
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)

    assert redeployed.resource_revisions == {"orders-db": 2}
    assert cluster.applied[-1].resources["orders-db"]["data"] == {"url": "postgres://db-b/orders"}
    assert state.stable is not None and state.stable.resource_revisions == {"orders-db": 2}
    history = await views.list_deployments(PROJECT, SERVICE, ENV, uow=uow)
    assert [d.resource_revisions for d in history] == [{"orders-db": 2}, {"orders-db": 1}, {"orders-db": 1}]


async def test_a_resource_that_runs_somewhere_cannot_be_deleted(uow: UnitOfWork, cluster: FakeCluster) -> None:  # noqa: F811
    await announce(uow)
    await ready(uow, cluster)
    await add_resource(uow, "spare", "cache", host="redis")

    with pytest.raises(Conflict, match=r"'orders-db' is used by what runs in dev: shop/orders; .* undeploy them"):
        await resources.delete_resource(ENV, "orders-db", uow=uow)
    await resources.delete_resource(ENV, "spare", uow=uow)  # used by nothing

    removal = await undeploy(ACT, uow=uow)
    with pytest.raises(Conflict, match="shop/orders"):  # still in the cluster until the worker removed it
        await resources.delete_resource(ENV, "orders-db", uow=uow)
    await work(uow, cluster)
    await resources.delete_resource(ENV, "orders-db", uow=uow)

    assert [r.name for r in await views.list_resources(ENV, uow=uow)] == []
    assert removal.resources == ["orders-db"]


async def test_a_deployment_under_way_holds_its_resources(uow: UnitOfWork) -> None:  # noqa: F811
    await announce(uow)
    await release(uow, "1.0.0")
    await add_resource(uow, "orders-db", "database", url="postgres://db/orders")
    await deploy(uow, "1.0.0", resources=["orders-db"])  # requested, not applied yet

    with pytest.raises(Conflict, match="shop/orders"):
        await resources.delete_resource(ENV, "orders-db", uow=uow)


def test_the_revision_rules_as_pure_functions() -> None:
    assert (domain.next_revision(None), domain.next_revision(1), domain.next_revision(7)) == (1, 2, 8)
    snapshot = {"db": {"type": "database", "data": {}, "revision": 4}, "old": {"type": "config", "data": {}}}
    assert domain.resource_revisions(snapshot) == {"db": 4}, "made before revisions: none recorded"
    domain.refuse_deleting_a_used_resource("db", "dev", [])
    with pytest.raises(Conflict, match="used by what runs in dev: a/x, b/y"):
        domain.refuse_deleting_a_used_resource("db", "dev", ["b/y", "a/x"])
