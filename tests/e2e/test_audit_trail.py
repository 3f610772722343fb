"""The audit trail of a chain, through the gateway of a running ``gantry up``: the org admin creates
a project, a service and a production environment, releases the service there, a pipeline makes a
version, the deploy admin adds a database and deploys; a project owner's deploy is refused. Then
one call to ``GET /api/gateway/audit`` answers who did what, on which target, and what came of it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.stack import Stack, post_pipeline_hook
from tests.e2e.test_chain import until
from tests.support import eventually, token

pytestmark = pytest.mark.e2e

PROJECT, SERVICE, ENV = "ledger", "books", "production"
DEPLOY_ADMIN = token("deploy-admin", user="dora")
OWNER = token(f"{PROJECT}:project-owner", user="olga")
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with Stack(tmp_path_factory.mktemp("audit")) as running:
        yield running


async def _walk(api: httpx.AsyncClient, stack: Stack) -> str:
    """As the org admin: project, service, production environment, release, one version."""
    project = {"code": PROJECT, "name": "Ledger", "gitlab_group": "acme"}
    assert (await api.post("/api/catalog/projects", json=project)).status_code == 201
    created = await api.post(
        f"/api/catalog/projects/{PROJECT}/services",
        json={"code": SERVICE, "name": "Books", "group": "com.acme.ledger", "type": "python-fastapi"},
    )
    assert created.status_code == 201, created.text
    environment = {"code": ENV, "name": "Production", "tier": "prod"}
    assert (await api.post("/api/release/environments", json=environment)).status_code == 201
    base = f"/api/release/projects/{PROJECT}/services/{SERVICE}"
    await until(lambda: api.post(f"{base}/releases", json={"environment": ENV}), 201)
    assert (await api.put(f"{base}/auto-release", json={"enabled": True})).status_code == 200
    await post_pipeline_hook(api, created.json(), 11)
    return str((await stack.wait_for_version(api, PROJECT, SERVICE, 11))["name"])


async def _deploy(stack: Stack, version: str) -> None:
    """As the deploy admin: a database, a deployment; a project owner's deploy is refused."""
    body = {"project": PROJECT, "service": SERVICE, "environment": ENV, "version": version, "resources": ["books-db"]}
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=60) as http:
        database = {
            "name": "books-db",
            "type": "database",
            "data": {"url": "postgresql://db/books", "password": PASSWORD},
        }
        made = await http.post(f"/api/deploy/environments/{ENV}/resources", json=database, headers=DEPLOY_ADMIN)
        assert made.status_code == 201, made.text
        refused = await http.post("/api/deploy/deployments", json=body, headers=OWNER)
        assert refused.status_code == 403, refused.text
        ticket = DEPLOY_ADMIN | {"X-Correlation-Id": "change-4711"}
        await until(lambda: http.post("/api/deploy/deployments", json=body, headers=ticket), 202)


def _line(entry: dict[str, Any]) -> tuple[str, str | None, int]:
    return entry["action"], entry["actor"], entry["outcome"]


async def test_the_trail_of_a_chain_names_who_did_what_and_what_came_of_it(stack: Stack) -> None:
    async with stack.client() as admin:
        version = await _walk(admin, stack)
        await _deploy(stack, version)

        async def production() -> list[dict[str, Any]] | None:
            answer = await admin.get("/api/gateway/audit", params={"environment": ENV, "action": "deploy"})
            found = answer.json() if answer.status_code == 200 else []
            return found if any(_line(entry) == ("deploy.create_deployment", "dora", 202) for entry in found) else None

        deploys = await eventually(production, timeout=60, interval=0.2)
        lines = [_line(entry) for entry in deploys]
        assert lines.index(("deploy.create_deployment", "dora", 202)) < lines.index(
            ("deploy.create_deployment", "olga", 403)
        ), "newest first"
        accepted = next(entry for entry in deploys if _line(entry) == ("deploy.create_deployment", "dora", 202))
        assert accepted["correlation_id"] == "change-4711" and accepted["changed"] is True
        assert accepted["target"] == {"project": PROJECT, "service": SERVICE, "environment": ENV, "version": version}
        refused = next(entry for entry in deploys if entry["actor"] == "olga")
        assert refused["roles"] == [f"{PROJECT}:project-owner"] and "deploy-admin" in refused["reason"]

        trail = (await admin.get("/api/gateway/audit", params={"limit": 500})).json()
        done = {(entry["action"], entry["actor"], entry["outcome"]) for entry in trail}
        assert {
            ("catalog.create_project", "root", 201),
            ("catalog.create_service", "root", 201),
            ("release.create_environment", "root", 201),
            ("release.create_release", "root", 201),
            ("release.update_auto_release", "root", 200),
            ("deploy.create_resource", "dora", 201),
        } <= done
        resource = next(entry for entry in trail if entry["action"] == "deploy.create_resource")
        assert resource["target"] == {"environment": ENV, "resource": "books-db"}
        assert PASSWORD not in (await admin.get("/api/gateway/audit", params={"limit": 500})).text
        assert not [entry for entry in trail if entry["path"].startswith("/webhooks")], "hooks are not user writes"
        assert {entry["recorded_by"] for entry in trail} == {"catalog", "release", "deploy"}, "not the forwarding"
        deployments = [entry for entry in trail if _line(entry) == ("deploy.create_deployment", "dora", 202)]
        assert len(deployments) == 1, "one request, one record"

    async with httpx.AsyncClient(base_url=stack.gateway, timeout=60) as http:
        assert (await http.get("/api/gateway/audit", headers=DEPLOY_ADMIN)).status_code == 200
        assert (await http.get("/api/gateway/audit", headers=OWNER)).status_code == 403
