"""Deploy's API habits a client can rely on: misspelt fields refused by name, a resent request
recognised (and a different one under the same key refused), references checked, lists paged."""

from __future__ import annotations

from pathlib import Path

import httpx

from services.deploy import driver_info, environments
from services.deploy.app import build_driver
from shared.events import EnvironmentChanged, Topic, new_event
from shared.outbox import UnitOfWork
from shared.settings import Settings
from tests.support import SECRET
from tests.unit.test_deploy_api import (
    BASE,
    DEPLOYER,
    client,  # noqa: F401 - the fixture
    cluster,  # noqa: F401 - the fixture
    deployment,
)
from tests.unit.test_deploy_handlers import FakeCluster, release, uow, work  # noqa: F401
from tests.unit.test_deploy_org_view import next_page


async def test_unknown_body_fields_are_refused_by_name(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await release(uow, "1.0.0")
    misspelt = await client.post("/deployments", json=deployment("1.0.0", resources=[], replica=5), headers=DEPLOYER)
    assert misspelt.status_code == 422 and "body.replica: Extra inputs are not permitted" in misspelt.json()["detail"]
    assert (await client.post("/deployments", json=deployment("1.0.0", resources=[]), headers=DEPLOYER)).is_success
    await work(uow, cluster)
    for method, path, body, field in [
        ("PUT", f"{BASE}/replicas", {"replicas": 2, "replica": 3}, "replica"),
        ("POST", f"{BASE}/rollback", {"versoin": "1.0.0"}, "versoin"),
        ("PUT", f"{BASE}/auto-deploy", {"enabled": True, "enable": True}, "enable"),
    ]:
        refused = await client.request(method, path, json=body, headers=DEPLOYER)
        assert refused.status_code == 422, (path, refused.text)
        assert f"body.{field}: Extra inputs are not permitted" in refused.json()["detail"]


async def test_an_idempotency_key_resent_with_another_request_is_refused(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await release(uow, "1.0.0", "1.1.0")
    key = DEPLOYER | {"Idempotency-Key": "k-1", "Content-Type": "application/json"}
    first = await client.post("/deployments", json=deployment("1.0.0", resources=[], replicas=2), headers=key)
    # the same request, its fields in another order and spacing: the same deployment
    same = await client.post(
        "/deployments",
        content='{"replicas": 2, "resources": [], "version": "1.0.0", "environment": "dev",'
        '  "service": "orders", "project": "shop"}',
        headers=key,
    )
    other = await client.post("/deployments", json=deployment("1.1.0", resources=[], replicas=2), headers=key)

    assert first.status_code == same.status_code == 202 and first.json()["id"] == same.json()["id"]
    assert other.status_code == 422 and "'k-1' was first sent with a different request" in other.json()["detail"]
    await work(uow, cluster)
    scale = DEPLOYER | {"Idempotency-Key": "s-1"}
    assert (await client.put(f"{BASE}/replicas", json={"replicas": 3}, headers=scale)).status_code == 202
    changed = await client.put(f"{BASE}/replicas", json={"replicas": 4}, headers=scale)
    elsewhere = await client.post(f"{BASE}/rollback", json={"version": "1.0.0"}, headers=scale)
    assert changed.status_code == elsewhere.status_code == 422


async def test_a_deployment_to_an_unknown_environment_is_404(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
) -> None:
    await release(uow, "1.0.0")
    nowhere = await client.post("/deployments", json=deployment("1.0.0", environment="prdo"), headers=DEPLOYER)
    assert nowhere.status_code == 404 and "environment 'prdo' does not exist" in nowhere.json()["detail"]

    announced = EnvironmentChanged(code="prod", name="Production", tier="prod", namespace="prod", change="created")
    event = new_event(Topic.ENVIRONMENT_CHANGED, announced, source="gantry/release", subject="prod", correlation_id="c")
    await environments.on_environment_changed(event, uow=uow)
    not_released = await client.post("/deployments", json=deployment("1.0.0", environment="prod"), headers=DEPLOYER)
    assert not_released.status_code == 409 and "release version 1.0.0 to prod first" in not_released.json()["detail"]


async def test_the_deployment_history_is_paged_newest_first(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await release(uow, "1.0.0", "1.1.0", "1.2.0")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        assert (await client.post("/deployments", json=deployment(version, resources=[]), headers=DEPLOYER)).is_success
        await work(uow, cluster)

    first = await client.get(f"{BASE}/deployments", params={"limit": 2}, headers=DEPLOYER)
    url = next_page(first)
    assert url is not None
    rest = await client.get(url, headers=DEPLOYER)
    whole = await client.get(f"{BASE}/deployments", headers=DEPLOYER)

    assert [d["version"] for d in first.json()] == ["1.2.0", "1.1.0"]
    assert [d["version"] for d in rest.json()] == ["1.0.0"] and next_page(rest) is None
    assert [d["version"] for d in whole.json()] == ["1.2.0", "1.1.0", "1.0.0"] and next_page(whole) is None
    bad = await client.get(f"{BASE}/deployments", params={"cursor": "WyJ4Il0"}, headers=DEPLOYER)  # ["x"]
    assert bad.status_code == 400 and "Link header" in bad.json()["detail"]


def test_readyz_names_the_cluster_driver_and_where_it_deploys(tmp_path: Path) -> None:
    """Without a cluster, "rendered" means manifests in a folder; with one, its kubeconfig says which."""
    rendered = build_driver(Settings(home=tmp_path, secret=SECRET))
    assert driver_info.describe(rendered) == {"driver": "rendered", "manifests": str(tmp_path / "manifests")}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: ops\n"
        "contexts: [{name: ops, context: {cluster: east, user: gantry}}]\n"
        "clusters: [{name: east, cluster: {server: 'https://10.0.0.1:6443'}}]\n"
        "users: [{name: gantry, user: {token: t}}]\n"
    )
    real = build_driver(Settings(home=tmp_path, secret=SECRET, kubeconfig=str(kubeconfig)))
    assert driver_info.describe(real) == {
        "driver": "kubernetes",
        "kubeconfig": str(kubeconfig),
        "context": "ops",
        "cluster": "east",
        "server": "https://10.0.0.1:6443",
    }
