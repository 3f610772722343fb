"""Release's HTTP API without Kafka: each verb with the roles that may and may not use it.

The app is built by ``create_app`` as in production; only its runtime (normally made by the
lifespan, which needs Kafka) is replaced by the test's database. Events come in through the
handlers the agents call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from services.release import handlers, lifecycle
from services.release.app import create_app
from shared.outbox import UnitOfWork
from shared.settings import Settings
from tests.support import ADMIN, SECRET, token
from tests.unit.test_release_handlers import PROJECT, service_created, uow, version_created  # noqa: F401
from tests.unit.test_release_lifecycle import deploy_status, service_changed

OWNER = token(f"{PROJECT}:project-owner", user="olga")
MEMBER = token(f"{PROJECT}:project-member", user="max")
OUTSIDER = token("other:project-owner", user="otto")
DEPLOYER = token("deploy-admin", user="dora")


@pytest.fixture
async def client(uow: UnitOfWork, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    api = create_app(Settings(home=tmp_path, secret=SECRET))
    api.state.runtime = SimpleNamespace(uow=uow, secret=SECRET)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://release") as http:
        yield http


@pytest.fixture
async def web(uow: UnitOfWork):  # noqa: F811
    """A service release knows, with two versions: one from main, then one from a feature branch."""
    announced = service_created("web")
    await lifecycle.on_service_created(announced, uow=uow)
    await handlers.on_version_created(version_created(announced, "m-1"), uow=uow)
    await handlers.on_version_created(version_created(announced, "f-1", ref="feature/login"), uow=uow)
    return announced


BASE = f"/projects/{PROJECT}/services/web"


async def environment(client: httpx.AsyncClient, code: str, **fields: object) -> httpx.Response:
    answer = await client.post(
        "/environments", json={"code": code, "name": code.title(), "tier": "staging"} | fields, headers=ADMIN
    )
    assert answer.status_code == 201, answer.text
    return answer


async def test_environments_are_written_by_org_admins_only(client: httpx.AsyncClient) -> None:
    await environment(client, "staging", ingress_class="nginx")
    writes = [
        ("POST", "/environments", {"code": "prod", "name": "Prod", "tier": "prod"}),
        ("PATCH", "/environments/staging", {"name": "Other"}),
        ("DELETE", "/environments/staging", None),
    ]
    for method, path, body in writes:
        assert (await client.request(method, path, json=body)).status_code == 401, (method, path)
        for refused in (DEPLOYER, OWNER):
            answer = await client.request(method, path, json=body, headers=refused)
            assert answer.status_code == 403 and "org-admin" in answer.json()["detail"], (method, path)

    patched = await client.patch(
        "/environments/staging", json={"ingress_host": "staging.example.com", "ingress_class": None}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["ingress_class"], patched.json()["ingress_host"]) == (
        "Staging",
        None,
        "staging.example.com",
    )
    bad_host = await client.patch("/environments/staging", json={"ingress_host": "http://x"}, headers=ADMIN)
    assert bad_host.status_code == 422 and "is not a host name" in bad_host.json()["detail"]
    unknown = await client.patch("/environments/nowhere", json={"name": "x"}, headers=ADMIN)
    assert unknown.status_code == 404
    for reader in (DEPLOYER, MEMBER, OUTSIDER):
        assert (await client.get("/environments/staging", headers=reader)).json()["ingress_host"] == (
            "staging.example.com"
        )
    assert (await client.delete("/environments/staging", headers=ADMIN)).status_code == 204
    assert (await client.get("/environments/staging", headers=ADMIN)).status_code == 404
    assert (await client.delete("/environments/staging", headers=ADMIN)).status_code == 404


async def test_unknown_body_fields_are_refused_naming_them(client: httpx.AsyncClient, web) -> None:
    await environment(client, "staging")
    bodies = [
        ("POST", "/environments", {"code": "prod", "name": "Prod", "tier": "prod", "replicas": 3}, "replicas"),
        ("PATCH", "/environments/staging", {"tier": "prod"}, "tier"),
        ("POST", f"{BASE}/releases", {"environment": "staging", "version": "m-1"}, "version"),
        ("PUT", f"{BASE}/auto-release", {"enabled": True, "branches": ["main"]}, "branches"),
        ("POST", f"{BASE}/releases/staging/versions", {"version": "m-1", "force": True}, "force"),
    ]
    for method, path, body, field in bodies:
        answer = await client.request(method, path, json=body, headers=ADMIN)
        assert answer.status_code == 422, (method, path, answer.text)
        assert f"body.{field}: Extra inputs are not permitted" in answer.json()["detail"]


async def test_environments_are_paged_and_searched(client: httpx.AsyncClient) -> None:
    for code in ("dev", "prod-eu", "prod-us", "staging"):
        await environment(client, code)
    first = await client.get("/environments", params={"limit": 2}, headers=MEMBER)
    assert [e["code"] for e in first.json()] == ["dev", "prod-eu"]
    following = first.headers["link"].removeprefix("<").split(">;")[0]
    assert first.headers["link"].endswith('rel="next"')
    second = await client.get(following.removeprefix("http://release"), headers=MEMBER)
    assert [e["code"] for e in second.json()] == ["prod-us", "staging"] and "link" not in second.headers
    found = await client.get("/environments", params={"q": "PROD"}, headers=MEMBER)
    assert [e["code"] for e in found.json()] == ["prod-eu", "prod-us"]


async def test_releasing_says_which_version_went_and_checks_references(client: httpx.AsyncClient, web) -> None:
    await environment(client, "staging")
    for refused, status in ((OUTSIDER, 403), (DEPLOYER, 403)):
        answer = await client.post(f"{BASE}/releases", json={"environment": "staging"}, headers=refused)
        assert answer.status_code == status
    nowhere = await client.post(f"{BASE}/releases", json={"environment": "nowhere"}, headers=MEMBER)
    assert nowhere.status_code == 404 and "environment 'nowhere' does not exist" in nowhere.json()["detail"]
    ghost = await client.post(
        f"/projects/{PROJECT}/services/ghost/releases", json={"environment": "staging"}, headers=MEMBER
    )
    assert ghost.status_code == 404

    released = await client.post(f"{BASE}/releases", json={"environment": "staging"}, headers=MEMBER)
    assert released.status_code == 201, released.text
    assert released.json()["latest"]["version"] == "m-1", "the feature branch's newer version stays out"
    assert released.json()["version_choice"] == "version 'm-1' goes there: the newest from a branch matching main"
    for reader in (MEMBER, DEPLOYER, ADMIN):
        overview = await client.get(f"{BASE}/releases", headers=reader)
        assert overview.status_code == 200 and overview.json()["auto_release_refs"] == ["main"]
    assert (await client.get(f"{BASE}/releases", headers=OUTSIDER)).status_code == 403


async def test_auto_release_settings_by_project_roles(client: httpx.AsyncClient, web) -> None:
    body = {"enabled": True, "refs": ["main", "release/*"], "tags": True}
    for refused in (OUTSIDER, DEPLOYER):
        assert (await client.put(f"{BASE}/auto-release", json=body, headers=refused)).status_code == 403
    answer = await client.put(f"{BASE}/auto-release", json=body, headers=OWNER)
    assert answer.status_code == 200, answer.text
    assert {k: answer.json()[k] for k in ("auto_release", "auto_release_refs", "auto_release_tags")} == {
        "auto_release": True,
        "auto_release_refs": ["main", "release/*"],
        "auto_release_tags": True,
    }
    default = await client.put(f"{BASE}/auto-release", json={"enabled": True}, headers=MEMBER)
    assert (default.json()["auto_release_refs"], default.json()["auto_release_tags"]) == (["main"], False)
    nothing = await client.put(f"{BASE}/auto-release", json={"enabled": True, "refs": []}, headers=MEMBER)
    assert nothing.status_code == 422 and "would release nothing" in nothing.json()["detail"]


async def test_unrelease_by_project_roles_once_nothing_runs_there(client: httpx.AsyncClient, web, uow) -> None:  # noqa: F811
    await environment(client, "staging")
    assert (await client.post(f"{BASE}/releases", json={"environment": "staging"}, headers=MEMBER)).status_code == 201
    await lifecycle.on_deploy_status(deploy_status(web, "staging", "succeeded"), uow=uow)
    path = f"{BASE}/releases/staging"
    for refused in (OUTSIDER, DEPLOYER):
        assert (await client.delete(path, headers=refused)).status_code == 403
    running = await client.delete(path, headers=MEMBER)
    assert running.status_code == 409 and "undeploy it first" in running.json()["detail"]
    in_use = await client.delete("/environments/staging", headers=ADMIN)
    assert in_use.status_code == 409
    assert f"running there: {PROJECT}/web" in in_use.json()["detail"]
    assert f"released to it: {PROJECT}/web" in in_use.json()["detail"]

    await lifecycle.on_deploy_status(deploy_status(web, "staging", "removed"), uow=uow)
    assert (await client.delete(path, headers=MEMBER)).status_code == 204
    assert (await client.delete(path, headers=MEMBER)).status_code == 404
    assert (await client.delete(f"{BASE}/releases/nowhere", headers=MEMBER)).status_code == 404
    assert (await client.delete("/environments/staging", headers=ADMIN)).status_code == 204


async def test_a_disabled_service_answers_409_naming_its_state(client: httpx.AsyncClient, web, uow) -> None:  # noqa: F811
    await environment(client, "staging")
    await lifecycle.on_service_changed(service_changed(web, "disabled", enabled=False), uow=uow)
    refused = await client.post(f"{BASE}/releases", json={"environment": "staging"}, headers=MEMBER)
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("service 'web' is disabled: enable it with PATCH /api/catalog/")
    await lifecycle.on_service_changed(service_changed(web, "enabled"), uow=uow)
    assert (await client.post(f"{BASE}/releases", json={"environment": "staging"}, headers=MEMBER)).status_code == 201


async def test_release_history_is_paged_newest_first(client: httpx.AsyncClient, web) -> None:
    await environment(client, "staging")
    await client.post(f"{BASE}/releases", json={"environment": "staging"}, headers=MEMBER)  # m-1
    for version in ("f-1", "m-1", "f-1"):
        answer = await client.post(f"{BASE}/releases/staging/versions", json={"version": version}, headers=MEMBER)
        assert answer.status_code == 201, answer.text
    seen, path = [], f"{BASE}/releases/staging/versions?limit=3"
    while path:
        page = await client.get(path, headers=DEPLOYER)
        assert page.status_code == 200, page.text
        seen.append([r["version"] for r in page.json()])
        link = page.headers.get("link")
        path = link.removeprefix("<http://release").split(">;")[0] if link else ""
    assert seen == [["f-1", "m-1", "f-1"], ["m-1"]]
    ids = [r["id"] for r in (await client.get(f"{BASE}/releases/staging/versions", headers=MEMBER)).json()]
    assert ids == sorted(ids, reverse=True) and len(ids) == 4
    bad = await client.get(f"{BASE}/releases/staging/versions", params={"cursor": "bm90LWpzb24"}, headers=MEMBER)
    assert bad.status_code == 400
    assert (await client.get(f"{BASE}/releases/staging/versions", headers=OUTSIDER)).status_code == 403
