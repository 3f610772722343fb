"""People from the identity provider through a service's HTTP API: catalog built by ``create_app``
with GANTRY_OIDC_ISSUER pointing at a stand-in issuer on loopback; its runtime is the test's
database and a local git host (the lifespan would need Kafka). The gateway's live events take the
provider's token in ``?access_token=`` too."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from services.catalog.app import create_app as create_catalog
from services.catalog.models import Project, Service
from services.catalog.running import ServiceRun
from services.catalog.scm import SCM, LocalGitScm
from services.gateway.app import create_app as create_gateway
from services.gateway.events_stream import EVENTS, EventStream
from services.gateway.models import Route
from shared.outbox import UnitOfWork
from shared.settings import Settings
from tests.oidc_issuer import AUDIENCE, StandInIssuer
from tests.support import ADMIN, SECRET

OWNER_CLAIM = "https://gitlab.org/claims/groups/owner"
DEVELOPER_CLAIM = "https://gitlab.org/claims/groups/developer"


@pytest.fixture
def issuer() -> Iterator[StandInIssuer]:
    with StandInIssuer() as stand_in:
        yield stand_in


def oidc_settings(tmp_path: Path, issuer: StandInIssuer) -> Settings:
    return Settings(
        home=tmp_path,
        secret=SECRET,
        oidc_issuer=issuer.url,
        oidc_audience=AUDIENCE,
        oidc_org_admin_groups="acme/gantry-admins",
        oidc_deploy_admin_groups="acme/sre",
        oidc_group_root="acme",
    )


async def serve(api: FastAPI, uow: UnitOfWork, settings: Settings, tmp_path: Path) -> httpx.AsyncClient:
    parts = {SCM.name: LocalGitScm(tmp_path / "repos"), EVENTS.name: EventStream("127.0.0.1:9", 10)}  # never started
    api.state.runtime = SimpleNamespace(uow=uow, secret=SECRET, settings=settings, parts=parts)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test")


@pytest.fixture
async def catalog(make_uow, issuer: StandInIssuer, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    uow = await make_uow("catalog", [Project, Service, ServiceRun])
    settings = oidc_settings(tmp_path, issuer)
    async with await serve(create_catalog(settings), uow, settings, tmp_path) as http:
        yield http


def signed_in(issuer: StandInIssuer, kid: str, **claims: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.token(kid, **claims)}"}


async def test_people_from_gitlab_use_catalog_with_the_roles_of_their_groups(catalog, issuer):
    kid = issuer.new_key("RS256")
    admin = signed_in(issuer, kid, preferred_username="ada", groups_direct=["acme/gantry-admins"])
    owner = signed_in(issuer, kid, preferred_username="olga", **{OWNER_CLAIM: ["acme/shop"]})
    developer = signed_in(issuer, kid, preferred_username="dev", **{DEVELOPER_CLAIM: ["acme/pay"]})
    outsider = signed_in(issuer, kid, preferred_username="oz", **{OWNER_CLAIM: ["elsewhere/shop"]})

    for code in ("shop", "pay"):
        body = {"code": code, "name": code.title(), "gitlab_group": f"acme/{code}"}
        assert (await catalog.post("/projects", json=body, headers=admin)).status_code == 201
    refused = await catalog.post("/projects", json={"code": "x", "name": "X", "gitlab_group": "acme/x"}, headers=owner)
    assert refused.status_code == 403 and "olga needs one of the roles org-admin" in refused.json()["detail"]

    async def codes(headers: dict[str, str]) -> list[str]:
        answer = await catalog.get("/projects", headers=headers)
        assert answer.status_code == 200
        return [project["code"] for project in answer.json()]

    assert await codes(admin) == ["pay", "shop"]
    assert await codes(owner) == ["shop"]
    assert await codes(developer) == ["pay"]
    assert await codes(outsider) == []  # a group outside GANTRY_OIDC_GROUP_ROOT stands for no project
    assert await codes(ADMIN) == ["pay", "shop"]  # Gantry's own tokens work alongside

    service = {"code": "web", "name": "Web", "group": "com.acme.web", "type": "go-http"}
    assert (await catalog.post("/projects/pay/services", json=service, headers=developer)).status_code == 403
    created = await catalog.post("/projects/shop/services", json=service, headers=owner)
    assert created.status_code == 201 and created.json()["created_by"] == "olga"


async def test_refused_tokens_are_401(catalog, issuer):
    kid = issuer.new_key("ES256")
    now = int(time.time())
    expired = await catalog.get("/projects", headers=signed_in(issuer, kid, iat=now - 900, exp=now - 600))
    elsewhere = await catalog.get("/projects", headers=signed_in(issuer, kid, aud="another-app"))
    assert (expired.status_code, elsewhere.status_code) == (401, 401)
    assert "expired" in expired.json()["detail"] and "not meant for Gantry" in elsewhere.json()["detail"]


async def test_an_issuer_that_cannot_be_reached_is_a_503_naming_it(catalog, issuer):
    token = signed_in(issuer, issuer.new_key())
    issuer.stop()  # before Gantry ever fetched its keys
    down = await catalog.get("/projects", headers=token)
    assert down.status_code == 503 and f"identity provider {issuer.url} did not answer" in down.json()["detail"]


async def test_without_an_issuer_configured_a_providers_token_is_a_clear_401(make_uow, issuer, tmp_path):
    uow = await make_uow("catalog", [Project, Service, ServiceRun])
    settings = Settings(home=tmp_path, secret=SECRET)
    async with await serve(create_catalog(settings), uow, settings, tmp_path) as http:
        answer = await http.get("/projects", headers=signed_in(issuer, issuer.new_key()))
    assert answer.status_code == 401 and "set GANTRY_OIDC_ISSUER" in answer.json()["detail"]


async def test_the_live_events_take_the_providers_token_in_the_query(make_uow, issuer, tmp_path):
    """EventSource cannot send headers: ``?access_token=`` carries the token; organization roles only."""
    uow = await make_uow("gateway", [Route])
    settings = oidc_settings(tmp_path, issuer)
    kid = issuer.new_key()
    async with await serve(create_gateway(settings), uow, settings, tmp_path) as http:
        owner = await http.get("/events", params={"access_token": issuer.token(kid, **{OWNER_CLAIM: ["acme/shop"]})})
        wrong = await http.get("/events", params={"access_token": issuer.token(kid, aud="x"), "topic": "nope"})
        sre = await http.get(
            "/events", params={"access_token": issuer.token(kid, groups=["acme/sre"]), "topic": "nope"}
        )
    assert owner.status_code == 403 and "deploy-admin" in owner.json()["detail"]
    assert wrong.status_code == 401
    assert sre.status_code == 422 and "unknown topic 'nope'" in sre.json()["detail"]  # past the door
