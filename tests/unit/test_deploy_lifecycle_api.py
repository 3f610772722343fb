"""Resources and undeploy through deploy's HTTP API: who may use each verb (deploy admins and org
admins; not project roles, not anonymous), and the answers a client gets."""

from __future__ import annotations

import httpx

from shared.outbox import UnitOfWork
from tests.support import ADMIN, token
from tests.unit.test_deploy_api import BASE, DEPLOYER, client, cluster  # noqa: F401 - the fixtures
from tests.unit.test_deploy_handlers import (
    ENV,
    FakeCluster,
    announce,
    release,
    uow,  # noqa: F401 - the fixture
    work,
)

RESOURCES = f"/environments/{ENV}/resources"
MEMBER = token("shop:project-owner", "shop:project-member")


async def test_only_deploy_admins_and_org_admins_change_resources_and_undeploy(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
) -> None:
    await announce(uow)
    routes = [
        ("GET", f"{RESOURCES}/cfg", None),
        ("PUT", f"{RESOURCES}/cfg", {"type": "config", "data": {}}),
        ("DELETE", f"{RESOURCES}/cfg", None),
        ("DELETE", BASE, None),
    ]
    for method, path, body in routes:
        anonymous = await client.request(method, path, json=body)
        refused = await client.request(method, path, json=body, headers=MEMBER)
        assert anonymous.status_code == 401, (method, path)
        assert refused.status_code == 403 and "deploy-admin" in refused.json()["detail"], (method, path)


async def test_a_resource_is_revised_read_and_deleted(client: httpx.AsyncClient, uow: UnitOfWork) -> None:  # noqa: F811
    await announce(uow)
    created = await client.post(RESOURCES, json={"name": "cfg", "type": "config", "data": {"a": 1}}, headers=ADMIN)
    revised = await client.put(f"{RESOURCES}/cfg", json={"type": "config", "data": {"a": 2}}, headers=DEPLOYER)
    again = await client.put(f"{RESOURCES}/cfg", json={"type": "config", "data": {"a": 3}}, headers=ADMIN)
    read = await client.get(f"{RESOURCES}/cfg", headers=DEPLOYER)

    assert created.status_code == 201 and created.json()["revision"] == 1
    assert revised.status_code == 200
    assert (revised.json()["revision"], revised.json()["updated_by"]) == (2, "dora")
    assert again.json()["revision"] == 3
    body = read.json()
    assert (body["revision"], body["data"]) == (3, {"a": 3})
    assert [(r["revision"], r["data"], r["created_by"]) for r in body["revisions"]] == [
        (1, {"a": 1}, "root"),
        (2, {"a": 2}, "dora"),
        (3, {"a": 3}, "root"),
    ]

    deleted = await client.delete(f"{RESOURCES}/cfg", headers=DEPLOYER)
    gone = await client.get(f"{RESOURCES}/cfg", headers=DEPLOYER)
    assert deleted.status_code == 204
    assert gone.status_code == 404 and "GET /api/deploy/environments/dev/resources" in gone.json()["detail"]


async def test_resource_requests_are_checked(client: httpx.AsyncClient, uow: UnitOfWork) -> None:  # noqa: F811
    unknown_environment = [
        await client.post("/environments/nowhere/resources", json={"name": "c", "type": "config"}, headers=DEPLOYER),
        await client.get("/environments/nowhere/resources", headers=DEPLOYER),
        await client.put("/environments/nowhere/resources/c", json={"type": "config"}, headers=DEPLOYER),
    ]
    for answer in unknown_environment:
        assert answer.status_code == 404 and "environment 'nowhere' does not exist" in answer.json()["detail"]

    await announce(uow)
    extra = await client.post(RESOURCES, json={"name": "c", "type": "config", "replica": 5}, headers=DEPLOYER)
    missing = await client.put(f"{RESOURCES}/c", json={"type": "config"}, headers=DEPLOYER)
    await client.post(RESOURCES, json={"name": "c", "type": "config"}, headers=DEPLOYER)
    extra_update = await client.put(f"{RESOURCES}/c", json={"type": "config", "name": "d"}, headers=DEPLOYER)
    bad_type = await client.put(f"{RESOURCES}/c", json={"type": "Not A Type"}, headers=DEPLOYER)
    huge = await client.put(f"{RESOURCES}/c", json={"type": "config", "data": {"x": "y" * 20_000}}, headers=DEPLOYER)

    assert extra.status_code == 422 and "replica" in extra.text
    assert missing.status_code == 404 and "resource 'c' does not exist" in missing.json()["detail"]
    assert extra_update.status_code == 422 and "name" in extra_update.text
    assert bad_type.status_code == 422 and "resource type 'Not A Type'" in bad_type.json()["detail"]
    assert huge.status_code == 422 and "more than the 16384" in huge.json()["detail"]


async def test_resources_are_paged_and_searched(client: httpx.AsyncClient, uow: UnitOfWork) -> None:  # noqa: F811
    await announce(uow)
    for name, type_ in (("orders-db", "database"), ("cache", "cache"), ("billing-db", "database")):
        await client.post(RESOURCES, json={"name": name, "type": type_}, headers=DEPLOYER)

    first = await client.get(RESOURCES, params={"limit": 2}, headers=DEPLOYER)
    rest = await client.get(first.links["next"]["url"], headers=DEPLOYER)
    databases = await client.get(RESOURCES, params={"q": "DATABASE"}, headers=DEPLOYER)

    assert [r["name"] for r in first.json()] == ["billing-db", "cache"]
    assert [r["name"] for r in rest.json()] == ["orders-db"] and "link" not in rest.headers
    assert [r["name"] for r in databases.json()] == ["billing-db", "orders-db"]


async def test_undeploy_over_http_then_the_resource_can_go(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await release(uow, "1.0.0")
    await client.post(RESOURCES, json={"name": "orders-db", "type": "database", "data": {}}, headers=DEPLOYER)
    body = {"project": "shop", "service": "orders", "environment": ENV, "version": "1.0.0", "resources": ["orders-db"]}
    assert (await client.post("/deployments", json=body, headers=DEPLOYER)).status_code == 202
    await work(uow, cluster)

    in_use = await client.delete(f"{RESOURCES}/orders-db", headers=DEPLOYER)
    removal = await client.delete(BASE, headers=ADMIN | {"Idempotency-Key": "u-1"})
    resent = await client.delete(BASE, headers=ADMIN | {"Idempotency-Key": "u-1"})
    await work(uow, cluster)
    state = (await client.get(BASE, headers=DEPLOYER)).json()
    twice = await client.delete(BASE, headers=DEPLOYER)
    freed = await client.delete(f"{RESOURCES}/orders-db", headers=DEPLOYER)

    assert in_use.status_code == 409 and "used by what runs in dev: shop/orders" in in_use.json()["detail"]
    assert removal.status_code == 202 and resent.json()["id"] == removal.json()["id"]
    assert (removal.json()["action"], removal.json()["by"], removal.json()["state"]) == (
        "undeploy",
        "root",
        "requested",
    )
    assert state["stable"] is None and state["removed"]["deployment_id"] == removal.json()["id"]
    assert twice.status_code == 409 and "already removed" in twice.json()["detail"]
    assert freed.status_code == 204
    history = (await client.get(f"{BASE}/deployments", headers=DEPLOYER)).json()
    assert [(d["action"], d["state"]) for d in history] == [("undeploy", "removed"), ("deploy", "rendered")]
    assert history[1]["resource_revisions"] == {"orders-db": 1}
