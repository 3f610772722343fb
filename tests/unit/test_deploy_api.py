"""Deploy's HTTP API without Kafka: the routes, their roles and their answers.

The app is built by ``create_app`` as in production; only its runtime (normally made by the
lifespan, which needs Kafka) is replaced by the database of the test and a fake cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from services.deploy.app import create_app
from services.deploy.cluster import CLUSTER
from services.deploy.sealed import KEYRING as KEYRING_PART
from shared.outbox import UnitOfWork
from shared.settings import Settings
from tests.support import ADMIN, KEYRING, SECRET, token
from tests.unit.test_deploy_handlers import (
    ENV,
    PROJECT,
    SERVICE,
    FakeCluster,
    add_resource,
    announce,
    release,
    uow,  # noqa: F401 - the fixture
    work,
)

DEPLOYER = token("deploy-admin", user="dora")
BASE = f"/environments/{ENV}/projects/{PROJECT}/services/{SERVICE}"


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
async def client(
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,
    tmp_path: Path,
) -> AsyncIterator[httpx.AsyncClient]:
    api = create_app(Settings(home=tmp_path, secret=SECRET))
    api.state.runtime = SimpleNamespace(
        uow=uow, secret=SECRET, parts={CLUSTER.name: cluster, KEYRING_PART.name: KEYRING}
    )
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://deploy") as http:
        yield http


def deployment(version: str, **fields: object) -> dict[str, object]:
    return {"project": PROJECT, "service": SERVICE, "environment": ENV, "version": version} | fields


async def test_every_change_needs_the_deploy_admin_role(client: httpx.AsyncClient) -> None:
    member = token(f"{PROJECT}:project-owner")
    routes = [
        ("GET", f"/environments/{ENV}/resources", None),
        ("POST", f"/environments/{ENV}/resources", {"name": "db", "type": "database", "data": {}}),
        ("POST", "/deployments", deployment("1.0.0", resources=[])),
        ("PUT", f"{BASE}/replicas", {"replicas": 2}),
        ("POST", f"{BASE}/rollback", None),
        ("POST", f"{BASE}/canary/promote", None),
        ("POST", f"{BASE}/canary/abort", None),
        ("PUT", f"{BASE}/auto-deploy", {"enabled": True}),
    ]
    for method, path, body in routes:
        anonymous = await client.request(method, path, json=body)
        assert anonymous.status_code == 401, (method, path)
        refused = await client.request(method, path, json=body, headers=member)
        assert refused.status_code == 403, (method, path)
        assert "deploy-admin" in refused.json()["detail"]


async def test_a_project_reads_what_runs_of_its_services_and_no_other_project_does(
    client: httpx.AsyncClient,
    uow: UnitOfWork,  # noqa: F811
) -> None:
    await release(uow, "1.0.0")
    for path in (BASE, f"{BASE}/deployments"):
        for reader in (token(f"{PROJECT}:project-member"), DEPLOYER, ADMIN):
            answer = await client.get(path, headers=reader)
            assert answer.status_code == 200, (path, answer.text)
        stranger = await client.get(path, headers=token("other:project-owner"))
        assert stranger.status_code == 403 and f"needs a role in project {PROJECT!r}" in stranger.json()["detail"]


async def test_resources_are_created_and_listed(client: httpx.AsyncClient, uow: UnitOfWork) -> None:  # noqa: F811
    await announce(uow)
    body = {"name": "orders-db", "type": "database", "data": {"url": "postgres://db/orders"}}

    created = await client.post(f"/environments/{ENV}/resources", json=body, headers=DEPLOYER)
    again = await client.post(f"/environments/{ENV}/resources", json=body, headers=ADMIN)
    listed = await client.get(f"/environments/{ENV}/resources", headers=DEPLOYER)

    assert created.status_code == 201 and created.json()["created_by"] == "dora"
    assert again.status_code == 409
    assert [r["name"] for r in listed.json()] == ["orders-db"]


async def test_resources_and_deployments_are_bounded_so_every_deploy_event_fits_the_broker(
    client: httpx.AsyncClient,
) -> None:
    huge = {"name": "blob", "type": "config", "data": {"text": "x" * 20_000}}
    refused = await client.post(f"/environments/{ENV}/resources", json=huge, headers=DEPLOYER)
    assert refused.status_code == 422 and "more than the 16384 a resource may hold" in refused.json()["detail"]
    many = await client.post(
        "/deployments", json=deployment("1.0.0", resources=[f"r{n}" for n in range(17)]), headers=DEPLOYER
    )
    assert many.status_code == 422 and "body.resources" in many.json()["detail"]


async def test_deploying_answers_with_the_guide_rules(
    client: httpx.AsyncClient,
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,
) -> None:
    await release(uow, "1.0.0")
    await add_resource(uow, "orders-db", "database", url="postgres://db/orders")

    unreleased = await client.post("/deployments", json=deployment("0.9.0"), headers=DEPLOYER)
    no_resources = await client.post("/deployments", json=deployment("1.0.0"), headers=DEPLOYER)
    zero = await client.post("/deployments", json=deployment("1.0.0", resources=[], replicas=0), headers=DEPLOYER)
    accepted = await client.post(
        "/deployments",
        json=deployment("1.0.0", resources=["orders-db"], replicas=2),
        headers=DEPLOYER | {"X-Correlation-Id": "ticket-42"},
    )

    assert unreleased.status_code == 409
    assert "release version 0.9.0 to dev first" in unreleased.json()["detail"]
    assert no_resources.status_code == 422
    assert "must select its resources" in no_resources.json()["detail"]
    assert zero.status_code == 422 and "the desired count cannot be 0" in zero.json()["detail"]
    assert accepted.status_code == 202
    body = accepted.json()
    assert (body["state"], body["by"], body["trigger"], body["replicas"]) == (
        "requested",
        "dora",
        "manual",
        2,
    )
    assert accepted.headers["x-correlation-id"] == "ticket-42"

    await work(uow, cluster)
    state = (await client.get(BASE, headers=DEPLOYER)).json()
    assert state["stable"]["version"] == "1.0.0"
    assert (state["stable"]["replicas"], state["stable"]["state"]) == (2, "rendered")
    live = [state["stable"][count] for count in ("desired", "current", "updated", "available")]
    assert live == [None] * 4, "rendered manifests run nowhere: no counts rather than 0 available"
    assert state["canary"] is None and state["resources"] == ["orders-db"]


async def test_running_state_of_an_unknown_service_is_404(client: httpx.AsyncClient) -> None:
    answer = await client.get(BASE, headers=DEPLOYER)
    assert answer.status_code == 404 and "release it to dev first" in answer.json()["detail"]


async def test_service_actions(
    client: httpx.AsyncClient,
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,
) -> None:
    await release(uow, "1.0.0", "2.0.0")
    refused = await client.put(f"{BASE}/auto-deploy", json={"enabled": True}, headers=DEPLOYER)
    assert refused.status_code == 409
    assert "auto-deploy applies only after a first manual deployment" in refused.json()["detail"]

    for body in (deployment("1.0.0", resources=[]), deployment("2.0.0")):
        assert (await client.post("/deployments", json=body, headers=DEPLOYER)).status_code == 202
        await work(uow, cluster)
    zero = await client.put(f"{BASE}/replicas", json={"replicas": 0}, headers=DEPLOYER)
    scaled = await client.put(f"{BASE}/replicas", json={"replicas": 3}, headers=DEPLOYER)
    await work(uow, cluster)
    rolled = await client.post(f"{BASE}/rollback", headers=DEPLOYER)
    no_canary = await client.post(f"{BASE}/canary/promote", headers=DEPLOYER)
    auto = await client.put(f"{BASE}/auto-deploy", json={"enabled": True}, headers=DEPLOYER)
    history = await client.get(f"{BASE}/deployments", headers=DEPLOYER)

    assert zero.status_code == 422
    assert scaled.status_code == 202 and scaled.json()["action"] == "scale"
    assert rolled.status_code == 202
    assert (rolled.json()["version"], rolled.json()["replicas"]) == ("1.0.0", 3)
    assert no_canary.status_code == 409
    assert auto.status_code == 200 and auto.json()["enabled"] is True
    assert [(d["action"], d["version"]) for d in history.json()] == [
        ("rollback", "1.0.0"),
        ("scale", "2.0.0"),
        ("deploy", "2.0.0"),
        ("deploy", "1.0.0"),
    ]


async def test_a_resent_request_makes_one_deployment(
    client: httpx.AsyncClient,
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,
) -> None:
    """A client that times out and resends (same Idempotency-Key) gets the same deployment back."""
    await release(uow, "1.0.0")
    await add_resource(uow, "orders-db", "database", url="postgres://db/orders")
    body = deployment("1.0.0", resources=["orders-db"], replicas=2)
    first = await client.post("/deployments", json=body, headers=DEPLOYER | {"Idempotency-Key": "k-1"})
    again = await client.post("/deployments", json=body, headers=DEPLOYER | {"Idempotency-Key": "k-1"})
    other = await client.post("/deployments", json=body, headers=DEPLOYER | {"Idempotency-Key": "k-2"})
    assert first.status_code == again.status_code == other.status_code == 202
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    await work(uow, cluster)
    scaled = [
        await client.put(f"{BASE}/replicas", json={"replicas": 3}, headers=DEPLOYER | {"Idempotency-Key": "s"})
        for _ in range(2)
    ]
    assert scaled[0].json()["id"] == scaled[1].json()["id"]
    history = (await client.get(f"{BASE}/deployments", headers=DEPLOYER)).json()
    assert [d["action"] for d in history] == ["scale", "deploy", "deploy"]
    someone_else = await client.post(
        "/deployments", json=body, headers=token("deploy-admin", user="eve") | {"Idempotency-Key": "k-1"}
    )
    assert someone_else.json()["id"] != first.json()["id"], "keys are per user"
