"""Versioning's HTTP API without Kafka: versions and pipelines, paged, read by the project's roles
and by deploy admins (the guide's organization-level flow: list the services, open one, see its
versions)."""

# ruff: noqa: F811 - the tests take the imported `uow` fixture by name
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from services.versioning.app import create_app
from shared.outbox import UnitOfWork
from shared.settings import Settings
from tests.support import SECRET, token
from tests.unit.test_versioning import receive, uow  # noqa: F401 - uow: the fixture
from tests.unit.test_versioning_pipelines import SHA_B, job, make_versions, passing, pipeline_hook

BASE = "/projects/shop/services/web"


@pytest.fixture
async def client(uow: UnitOfWork, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    api = create_app(Settings(home=tmp_path, secret=SECRET))
    api.state.runtime = SimpleNamespace(uow=uow, secret=SECRET, parts={})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://versioning") as http:
        yield http


async def test_deploy_admins_and_the_projects_roles_read_others_do_not(client, uow):
    await receive(uow, pipeline_hook(1, "success", passing()))
    await make_versions(uow)
    for reader in (token("deploy-admin"), token("org-admin"), token("shop:project-member")):
        for path in (f"{BASE}/versions", f"{BASE}/pipelines"):
            answer = await client.get(path, headers=reader)
            assert answer.status_code == 200 and len(answer.json()) == 1, answer.text
    for stranger in (token("other:project-owner"), token("other:project-member")):
        refused = await client.get(f"{BASE}/versions", headers=stranger)
        assert refused.status_code == 403 and "deploy-admin" in refused.json()["detail"]
    assert (await client.get(f"{BASE}/pipelines")).status_code == 401


async def test_lists_page_newest_first_with_a_link_to_the_next_page(client, uow):
    for number in range(1, 6):
        await receive(
            uow, pipeline_hook(number, "success", passing(first=10 * number), sha=f"{number:040x}"), f"d{number}"
        )
    await make_versions(uow)
    reader = token("deploy-admin")
    for path, field in ((f"{BASE}/versions", "pipeline_id"), (f"{BASE}/pipelines", "pipeline_id")):
        seen, url = [], f"{path}?limit=2"
        while url:
            answer = await client.get(url, headers=reader)
            assert answer.status_code == 200 and isinstance(answer.json(), list)
            seen += [item[field] for item in answer.json()]
            link = answer.headers.get("link")
            url = link.split(">")[0].removeprefix("<") if link else None
        assert seen == [5, 4, 3, 2, 1], path
    bad = await client.get(f"{BASE}/versions?cursor=nonsense!", headers=reader)
    assert bad.status_code == 400 and "cursor" in bad.json()["detail"]
    too_many = await client.get(f"{BASE}/versions?limit=501", headers=reader)
    assert too_many.status_code == 422


async def test_versions_are_searched_by_name_or_ref(client, uow):
    await receive(uow, pipeline_hook(1, "success", passing()), "d1")
    await receive(uow, pipeline_hook(2, "success", passing(first=3), sha=SHA_B, ref="v2.0.0", tag=True), "d2")
    await make_versions(uow)
    found = await client.get(f"{BASE}/versions?q=V2", headers=token("deploy-admin"))
    assert [v["name"] for v in found.json()] == ["v2.0.0"]
    tagged = await client.get(f"{BASE}/pipelines?q=v2", headers=token("deploy-admin"))
    assert [p["pipeline_id"] for p in tagged.json()] == [2]


async def test_the_pipelines_view_shows_stages_jobs_and_the_version_made_or_linked(client, uow):
    await receive(uow, pipeline_hook(1, "success", passing()), "d1")
    await receive(uow, pipeline_hook(2, "success", passing(first=3)), "d2")  # the same commit
    failing = [job(5, "compile", "success", stage="build"), job(6, "unit", "failed"), job(7, "lint", "success")]
    await receive(uow, pipeline_hook(3, "success", failing, sha=SHA_B), "d3")
    await receive(uow, pipeline_hook(4, "running", [job(8, "compile", "running", stage="build")], sha=SHA_B), "d4")
    [version] = await make_versions(uow)
    answer = await client.get(f"{BASE}/pipelines", headers=token("shop:project-member"))
    running, refused, linked, made = answer.json()
    assert (made["version"], made["version_made"]) == (version, True)
    assert (linked["version"], linked["version_made"]) == (version, False)
    assert refused["version"] is None and "'unit'" in refused["no_version_reason"]
    assert [(s["name"], s["status"]) for s in refused["stages"]] == [("build", "success"), ("test", "failed")]
    assert [(j["name"], j["status"], j["latest"]) for j in refused["stages"][1]["jobs"]] == [
        ("unit", "failed", True),
        ("lint", "success", True),
    ]
    assert running["status"] == "running" and running["stages"][0]["status"] == "running"
    assert running["stages"][1] == {"name": "test", "status": None, "jobs": []}, "no job of it listed yet"


async def test_failed_pipelines_across_services_for_the_projects_a_user_reads(client, uow):
    await receive(uow, pipeline_hook(1, "success", passing()), "d1")
    await receive(uow, pipeline_hook(2, "failed", [job(5, "unit", "failed")], sha=SHA_B), "d2")
    for reader in (token("deploy-admin"), token("shop:project-member")):
        failed = await client.get("/pipelines?status=failed", headers=reader)
        assert failed.status_code == 200, failed.text
        assert [(p["project"], p["service"], p["pipeline_id"]) for p in failed.json()] == [("shop", "web", 2)]
        jobs = [(job["name"], job["status"]) for stage in failed.json()[0]["stages"] for job in stage["jobs"]]
        assert jobs == [("unit", "failed")], "with its stages and jobs, as the service's own list shows them"
        every = await client.get("/pipelines", headers=reader)
        assert [p["pipeline_id"] for p in every.json()] == [2, 1], "last changed first"
    assert (await client.get("/pipelines?status=failed", headers=token("other:project-owner"))).json() == []
    assert (await client.get("/pipelines?status=failed")).status_code == 401
    assert (await client.get("/pipelines?status=no%20such", headers=token("deploy-admin"))).status_code == 422
