"""Catalog's HTTP API without Kafka: a service renamed, disabled, enabled and deleted, a project
deleted, and the lists the organization roles read, with the roles that may and may not.

The app is built by ``create_app`` as in production; only its runtime (normally made by the
lifespan, which needs Kafka) is replaced by the database of the test and a real local git host.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from services.catalog import running
from services.catalog.app import create_app
from services.catalog.models import Project, Service
from services.catalog.running import ServiceRun
from services.catalog.scm import SCM, LocalGitScm, Repository, ScmUnavailable
from shared.events import DeployStatus, Topic, new_event
from shared.outbox import UnitOfWork
from shared.settings import Settings
from tests.support import ADMIN, SECRET, token
from tests.unit.conftest import outbox

OWNER = token("shop:project-owner", user="olga")
CODE_ADMIN = token("shop:source-code-admin", user="sam")
MEMBER = token("shop:project-member", user="max")
DEPLOYER = token("deploy-admin", user="dora")
STRANGER = token("other:project-owner", user="oz")
WEB = "/projects/shop/services/web"


class Host(LocalGitScm):
    """The real local git host, which can be told to fail the way an unreachable GitLab does."""

    down = False

    def archive(self, repository: Repository) -> bool:
        if self.down:
            raise ScmUnavailable("GitLab at http://gitlab.test could not be reached to archive the project")
        return super().archive(repository)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path / "repos")


@pytest.fixture
async def uow(make_uow) -> UnitOfWork:
    result: UnitOfWork = await make_uow("catalog", [Project, Service, ServiceRun])
    return result


@pytest.fixture
async def client(uow: UnitOfWork, host: Host, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(home=tmp_path, secret=SECRET)
    api = create_app(settings)
    api.state.runtime = SimpleNamespace(uow=uow, secret=SECRET, settings=settings, parts={SCM.name: host})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://catalog") as http:
        for code in ("shop", "other"):
            body = {"code": code, "name": code.title(), "gitlab_group": f"acme-{code}"}
            assert (await http.post("/projects", json=body, headers=ADMIN)).status_code == 201
        for code, name, group in (("web", "Web", "com.acme.web"), ("api", "Orders API", "com.acme.orders")):
            body = {"code": code, "name": name, "group": group, "type": "go-http"}
            assert (await http.post("/projects/shop/services", json=body, headers=OWNER)).status_code == 201
        yield http


async def changes(uow: UnitOfWork, topic: str = "service.changed") -> list[dict]:
    return [json.loads(row.payload)["data"] for row in await outbox(uow, topic)]


async def runs_in(uow: UnitOfWork, service: dict, environment: str, state: str) -> None:
    data = DeployStatus(
        service_id=service["id"],
        project="shop",
        service=service["code"],
        deployment_id=f"d-{environment}-{state}",
        environment=environment,
        version="1.0.0",
        state=state,  # type: ignore[arg-type]
        desired=1,
    )
    envelope = new_event(Topic.DEPLOY_STATUS, data, source="gantry/deploy", subject=data.subject)
    await running.on_deploy_status(envelope, uow=uow)


async def test_owners_rename_disable_and_enable_a_service(client: httpx.AsyncClient, uow: UnitOfWork) -> None:
    for refused in (MEMBER, DEPLOYER, STRANGER):
        answer = await client.patch(WEB, json={"enabled": False}, headers=refused)
        assert answer.status_code == 403 and "shop:project-owner" in answer.json()["detail"]
    assert (await client.patch(WEB, json={"enabled": False})).status_code == 401

    renamed = await client.patch(WEB, json={"name": "Web Shop"}, headers=OWNER)
    disabled = await client.patch(WEB, json={"enabled": False}, headers=CODE_ADMIN)
    again = await client.patch(WEB, json={"enabled": False}, headers=OWNER)
    enabled = await client.patch(WEB, json={"enabled": True}, headers=ADMIN)
    both = await client.patch(WEB, json={"name": "Shop Front", "enabled": False}, headers=OWNER)

    assert [a.status_code for a in (renamed, disabled, again, enabled, both)] == [200] * 5
    assert renamed.json()["name"] == "Web Shop" and renamed.json()["enabled"] is True
    assert again.json()["enabled"] is False
    assert (both.json()["name"], both.json()["enabled"]) == ("Shop Front", False)
    announced = [(c["change"], c["name"], c["enabled"]) for c in await changes(uow)]
    assert announced == [
        ("updated", "Web Shop", True),
        ("disabled", "Web Shop", False),  # disabling it again announced nothing
        ("enabled", "Web Shop", True),
        ("updated", "Shop Front", True),
        ("disabled", "Shop Front", False),
    ]
    read = await client.get(WEB, headers=MEMBER)
    assert (read.json()["name"], read.json()["enabled"]) == ("Shop Front", False)


async def test_a_change_is_checked(client: httpx.AsyncClient, uow: UnitOfWork) -> None:
    unknown = await client.patch(WEB, json={"enabled": False, "replicas": 5}, headers=OWNER)
    empty = await client.patch(WEB, json={}, headers=OWNER)
    blank = await client.patch(WEB, json={"name": " "}, headers=OWNER)
    missing = await client.patch("/projects/shop/services/nope", json={"enabled": False}, headers=OWNER)

    assert unknown.status_code == 422 and "body.replicas: Extra inputs are not permitted" in unknown.json()["detail"]
    assert empty.status_code == 422 and "nothing to change" in empty.json()["detail"]
    assert blank.status_code == 422 and "name is required" in blank.json()["detail"]
    assert missing.status_code == 404 and "'nope'" in missing.json()["detail"]
    assert await changes(uow) == []
    assert (await client.get(WEB, headers=OWNER)).json()["enabled"] is True


async def test_a_service_is_deleted_once_disabled_and_running_nowhere(
    client: httpx.AsyncClient, uow: UnitOfWork, host: Host
) -> None:
    web = (await client.get(WEB, headers=OWNER)).json()
    enabled = await client.delete(WEB, headers=OWNER)
    assert enabled.status_code == 409 and "disable it first" in enabled.json()["detail"]

    await client.patch(WEB, json={"enabled": False}, headers=OWNER)
    await runs_in(uow, web, "staging", "succeeded")
    await runs_in(uow, web, "production", "progressing")
    still = await client.delete(WEB, headers=OWNER)
    assert still.status_code == 409 and "still runs in production, staging" in still.json()["detail"]
    await runs_in(uow, web, "staging", "removed")
    await runs_in(uow, web, "production", "removed")

    for refused in (MEMBER, DEPLOYER, STRANGER):
        assert (await client.delete(WEB, headers=refused)).status_code == 403
    deleted = await client.delete(WEB, headers=CODE_ADMIN)

    assert deleted.status_code == 204
    assert (await client.get(WEB, headers=OWNER)).status_code == 404
    assert [(c["change"], c["service_id"]) for c in await changes(uow)][-1] == ("deleted", web["id"])
    bare = host.root / "acme-shop" / "web.git"
    assert (bare / "HEAD").is_file() and (bare / "archived.json").is_file(), "archived, not deleted"
    free = await client.get("/projects/shop/service-codes/web", headers=OWNER)
    assert free.json()["available"] is True, "its code is free again in the project"
    body = {"code": "web", "name": "Web", "group": "com.acme.web", "type": "go-http"}
    taken = await client.post("/projects/shop/services", json=body, headers=OWNER)
    assert taken.status_code == 409 and "remove the existing repository first" in taken.json()["detail"]
    assert (await client.delete(WEB, headers=OWNER)).status_code == 404


async def test_a_repository_host_failure_deletes_nothing(
    client: httpx.AsyncClient, uow: UnitOfWork, host: Host
) -> None:
    await client.patch(WEB, json={"enabled": False}, headers=OWNER)
    host.down = True

    failed = await client.delete(WEB, headers=OWNER)

    assert failed.status_code == 502
    assert "was not deleted: GitLab at http://gitlab.test could not be reached" in failed.json()["detail"]
    assert (await client.get(WEB, headers=OWNER)).status_code == 200
    assert [c["change"] for c in await changes(uow)] == ["disabled"]
    host.down = False
    assert (await client.delete(WEB, headers=OWNER)).status_code == 204, "once the host answers, it goes"


async def test_only_an_org_admin_deletes_a_project_and_only_an_empty_one(
    client: httpx.AsyncClient, uow: UnitOfWork
) -> None:
    for refused in (OWNER, DEPLOYER, token("other:project-owner")):
        assert (await client.delete("/projects/other", headers=refused)).status_code == 403
    full = await client.delete("/projects/shop", headers=ADMIN)
    assert full.status_code == 409 and "still has 2 services: they must be deleted first" in full.json()["detail"]

    assert (await client.delete("/projects/other", headers=ADMIN)).status_code == 204
    assert (await client.delete("/projects/other", headers=ADMIN)).status_code == 404
    assert await changes(uow, "project.changed") == [{"project": "other", "change": "deleted"}]
    assert [p["code"] for p in (await client.get("/projects", headers=ADMIN)).json()] == ["shop"]


async def test_organization_roles_read_every_project_and_lists_page_and_search(client: httpx.AsyncClient) -> None:
    assert [p["code"] for p in (await client.get("/projects", headers=DEPLOYER)).json()] == ["other", "shop"]
    assert [p["code"] for p in (await client.get("/projects", headers=MEMBER)).json()] == ["shop"]
    assert [p["code"] for p in (await client.get("/projects?q=OTH", headers=ADMIN)).json()] == ["other"]
    assert (await client.get(WEB, headers=DEPLOYER)).json()["enabled"] is True
    assert (await client.get(WEB, headers=STRANGER)).status_code == 403
    assert (await client.get("/projects/shop/services", headers=STRANGER)).status_code == 403

    first = await client.get("/projects/shop/services?limit=1", headers=DEPLOYER)
    assert [s["code"] for s in first.json()] == ["api"]
    url = first.headers["link"].removeprefix("<").split(">")[0]
    second = await client.get(url, headers=DEPLOYER)
    assert [s["code"] for s in second.json()] == ["web"] and "link" not in second.headers
    for q, found in (("orders", ["api"]), ("com.acme.web", ["web"]), ("WE", ["web"]), ("nothing", [])):
        answer = await client.get("/projects/shop/services", params={"q": q}, headers=MEMBER)
        assert [s["code"] for s in answer.json()] == found, q


async def test_unknown_body_fields_are_refused_naming_them(client: httpx.AsyncClient) -> None:
    project = {"code": "x", "name": "X", "gitlab_group": "acme-x", "owner": "ada"}
    service = {"code": "x", "name": "X", "group": "g", "type": "go-http", "replicas": 3}
    refused_project = await client.post("/projects", json=project, headers=ADMIN)
    refused_service = await client.post("/projects/shop/services", json=service, headers=OWNER)
    assert refused_project.status_code == 422 and "body.owner: Extra inputs" in refused_project.json()["detail"]
    assert refused_service.status_code == 422 and "body.replicas: Extra inputs" in refused_service.json()["detail"]
    assert (await client.get("/projects/shop/services/x", headers=OWNER)).status_code == 404
