"""The deploy admin's walk, as the README tells it, through the gateway of a running ``gantry up``:
a token with deploy-admin alone lists the organization's services, opens one, sees its released
versions, deploys the one released last and reads the deployment back by its id."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.stack import Stack, post_pipeline_hook
from tests.e2e.test_chain import until
from tests.support import eventually, token

pytestmark = pytest.mark.e2e

PROJECT, SERVICE, ENV = "depot", "stock", "qa"
DEPLOY_ADMIN = token("deploy-admin", user="dora")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with Stack(tmp_path_factory.mktemp("deploy-admin")) as running:
        yield running


async def _released(api: httpx.AsyncClient, stack: Stack) -> str:
    """As the org admin: a project, a service, an environment it is released to, one version."""
    assert (
        await api.post("/api/catalog/projects", json={"code": PROJECT, "name": "Depot", "gitlab_group": "acme"})
    ).status_code == 201
    created = await api.post(
        f"/api/catalog/projects/{PROJECT}/services",
        json={"code": SERVICE, "name": "Stock", "group": "com.acme.depot", "type": "python-fastapi"},
    )
    assert created.status_code == 201, created.text
    assert (await api.post("/api/release/environments", json={"code": ENV, "name": "QA", "tier": "test"})).is_success
    base = f"/api/release/projects/{PROJECT}/services/{SERVICE}"
    await until(lambda: api.post(f"{base}/releases", json={"environment": ENV}), 201)
    assert (await api.put(f"{base}/auto-release", json={"enabled": True})).status_code == 200
    await post_pipeline_hook(api, created.json(), 7)
    version = await stack.wait_for_version(api, PROJECT, SERVICE, 7)
    return str(version["name"])


async def test_a_deploy_admin_lists_opens_and_deploys(stack: Stack) -> None:
    async with stack.client() as api:
        version = await _released(api, stack)
    async with httpx.AsyncClient(base_url=stack.gateway, headers=DEPLOY_ADMIN, timeout=60) as dora:

        async def listed() -> list[dict[str, Any]] | None:
            found = (await dora.get("/api/deploy/services", params={"q": SERVICE})).json()
            return found if found and found[0]["environments"] else None

        services = await eventually(listed, timeout=60, interval=0.2)
        assert (services[0]["project"], services[0]["service"]) == (PROJECT, SERVICE)
        opened = (await dora.get(f"/api/deploy/services/{PROJECT}/{SERVICE}")).json()
        assert [v["version"] for v in opened["environments"][0]["versions"]] == [version]
        # the service's versions and pipelines, read-only: a deploy admin reads every project's
        versions = await dora.get(f"/api/versioning/projects/{PROJECT}/services/{SERVICE}/versions")
        assert [v["name"] for v in versions.json()] == [version]
        refused = await dora.post(
            f"/api/catalog/projects/{PROJECT}/services",
            json={"code": "x", "name": "X", "group": "g", "type": "static-web"},
        )
        assert refused.status_code == 403, "reading every project is not writing to it"

        body = {"project": PROJECT, "service": SERVICE, "environment": ENV, "version": "latest", "resources": []}
        answer = await dora.post("/api/deploy/deployments", json=body)
        assert answer.status_code == 202, answer.text
        assert answer.json()["version"] == version, "the answer names the version latest chose"

        async def applied() -> dict[str, Any] | None:
            found = (await dora.get(f"/api/deploy/deployments/{answer.json()['id']}")).json()
            return found if found["state"] == "rendered" else None

        done = await eventually(applied, timeout=60, interval=0.2)
        assert (done["by"], done["available"]) == ("dora", None)
        opened = (await dora.get(f"/api/deploy/services/{PROJECT}/{SERVICE}")).json()
        qa = opened["environments"][0]
        assert qa["stable"]["version"] == version and qa["last_deployment"]["id"] == done["id"]
