"""The organization's audit trail in the gateway, without Kafka: records kept once as the consumer
receives them, asked over HTTP by the roles that may (and refused to those that may not), filtered,
newest first and paged, pruned past the retention.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlmodel import select

from services.gateway import audit, known_services
from services.gateway.app import create_app
from services.gateway.models import Route
from shared.events import AuditRecorded, Envelope, Topic, new_event
from shared.outbox import OutboxMessage, UnitOfWork
from shared.settings import Settings
from tests.support import ADMIN, SECRET, token
from tests.unit.test_gateway_routes import KNOWN, service_event

DEPLOYER = token("deploy-admin", user="dora")
OWNER = token("shop:project-owner", user="olga")
MONDAY = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
async def uow(make_uow) -> UnitOfWork:
    uow = await make_uow("gateway", [Route, known_services.KnownService, audit.AuditEntry])
    for target in KNOWN:
        await known_services.on_service_created(service_event(target), uow=uow)
    return uow


@pytest.fixture
async def client(uow: UnitOfWork, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    api = create_app(Settings(home=tmp_path, secret=SECRET))
    api.state.runtime = SimpleNamespace(uow=uow, secret=SECRET, parts={})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://gateway") as http:
        yield http


def recorded(action: str, at: datetime, *, outcome: int = 202, actor: str = "dora", **target: str) -> Envelope:
    data = AuditRecorded(
        request_id=f"r-{action}-{at.isoformat()}",
        recorded_by=action.split(".")[0],
        action=action,
        method="POST",
        path="/deployments",
        actor=actor,
        roles=["deploy-admin"],
        target=target,
        outcome=outcome,
        reason="dora needs one of the roles org-admin, deploy-admin" if outcome == 403 else None,
        changed=outcome < 400,
        at=at,
    )
    return new_event(Topic.AUDIT_RECORDED, data, source="gantry/deploy", subject=data.subject, correlation_id="c-1")


async def keep(uow: UnitOfWork, *envelopes: Envelope) -> None:
    for envelope in envelopes:
        await audit.keep_record(envelope, uow=uow)


async def test_a_record_is_kept_once_however_often_it_is_delivered(uow: UnitOfWork) -> None:
    envelope = recorded("deploy.create_deployment", MONDAY, project="shop", service="web", environment="production")
    assert await audit.keep_record(envelope, uow=uow) is True
    assert await audit.keep_record(envelope, uow=uow) is False
    async with uow.sessions() as session:
        [entry] = (await session.exec(select(audit.AuditEntry))).all()
    assert (entry.project, entry.service, entry.environment, entry.correlation_id) == (
        "shop",
        "web",
        "production",
        "c-1",
    )


async def test_org_and_deploy_admins_read_the_trail_others_may_not(client: httpx.AsyncClient, uow: UnitOfWork) -> None:
    await keep(uow, recorded("deploy.create_deployment", MONDAY, project="shop", environment="production"))
    for who in (ADMIN, DEPLOYER):
        for path in ("/audit", "/api/gateway/audit"):
            answer = await client.get(path, headers=who)
            assert answer.status_code == 200, answer.text
            assert [entry["action"] for entry in answer.json()] == ["deploy.create_deployment"]
    refused = await client.get("/audit", headers=OWNER)
    assert refused.status_code == 403 and "deploy-admin" in refused.json()["detail"]
    assert (await client.get("/audit")).status_code == 401


async def test_who_deployed_what_to_production_this_week(client: httpx.AsyncClient, uow: UnitOfWork) -> None:
    production = {"project": "shop", "service": "web", "environment": "production"}
    await keep(
        uow,
        recorded("deploy.create_deployment", MONDAY - timedelta(days=7), **production),  # last week
        recorded("deploy.create_deployment", MONDAY + timedelta(hours=1), **production),
        recorded("deploy.rollback", MONDAY + timedelta(hours=2), **production),
        recorded("deploy.create_deployment", MONDAY + timedelta(hours=3), **{**production, "environment": "staging"}),
        recorded("deploy.create_deployment", MONDAY + timedelta(hours=4), actor="mel", outcome=403, **production),
        recorded("release.create_release", MONDAY + timedelta(hours=5), **production),
    )
    week = {"environment": "production", "action": "deploy", "since": "2025-03-03", "until": "2025-03-10"}
    answer = await client.get("/audit", params=week, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    found = [(entry["action"], entry["actor"], entry["outcome"], entry["at"][11:16]) for entry in answer.json()]
    assert found == [
        ("deploy.create_deployment", "mel", 403, "13:00"),
        ("deploy.rollback", "dora", 202, "11:00"),
        ("deploy.create_deployment", "dora", 202, "10:00"),
    ]
    assert "deploy-admin" in answer.json()[0]["reason"]
    refused = await client.get("/audit", params={**week, "outcome": "refused"}, headers=ADMIN)
    assert [(entry["actor"], entry["outcome"]) for entry in refused.json()] == [("mel", 403)]
    exact = await client.get("/audit", params={"action": "deploy.rollback", "actor": "dora"}, headers=ADMIN)
    assert [entry["action"] for entry in exact.json()] == ["deploy.rollback"]
    bad = await client.get("/audit", params={"outcome": "sometimes"}, headers=ADMIN)
    assert bad.status_code == 422 and "outcome" in bad.json()["detail"]


async def test_the_trail_is_paged_newest_first(client: httpx.AsyncClient, uow: UnitOfWork) -> None:
    await keep(uow, *(recorded("deploy.scale", MONDAY + timedelta(minutes=i), project="shop") for i in range(5)))
    seen: list[str] = []
    url: str | None = "/audit?limit=2"
    while url is not None:
        page = await client.get(url, headers=DEPLOYER)
        assert page.status_code == 200 and len(page.json()) <= 2
        seen += [entry["at"][14:16] for entry in page.json()]
        url = page.links.get("next", {}).get("url")
    assert seen == ["04", "03", "02", "01", "00"]


async def test_records_past_the_retention_are_pruned(uow: UnitOfWork) -> None:
    await keep(uow, recorded("deploy.scale", MONDAY - timedelta(days=401)), recorded("deploy.scale", MONDAY))
    assert await audit.prune(uow=uow, keep=timedelta(days=400), now=MONDAY) == 1
    async with uow.sessions() as session:
        assert [entry.at for entry in (await session.exec(select(audit.AuditEntry))).all()] == [MONDAY]


async def audit_outbox(uow: UnitOfWork) -> list[Envelope]:
    async with uow.sessions() as session:
        rows = (await session.exec(select(OutboxMessage).where(OutboxMessage.topic == "audit.recorded"))).all()
    return [Envelope.model_validate(json.loads(row.payload)) for row in rows]


async def test_the_gateways_own_writes_reach_its_trail(client: httpx.AsyncClient, uow: UnitOfWork) -> None:
    route: dict[str, Any] = {"name": "orders", "path": "/orders/**", "service": "shop/orders"}
    assert (await client.post("/api/gateway/routes", json=route, headers=OWNER)).status_code == 201
    member = token("shop:project-member", user="mel")
    assert (await client.delete("/routes/orders", headers=member)).status_code == 403
    assert (await client.get("/routes", headers=member)).status_code == 200  # reads are not recorded
    await keep(uow, *await audit_outbox(uow))
    trail = (await client.get("/audit", params={"action": "gateway"}, headers=ADMIN)).json()
    assert [(e["action"], e["actor"], e["outcome"], e["changed"]) for e in trail] == [
        ("gateway.delete_route", "mel", 403, False),
        ("gateway.create_route", "olga", 201, True),
    ]
    assert trail[0]["target"] == {"route": "orders"}
    assert trail[1]["target"] == {"route": "orders", "project": "shop", "service": "orders"}


async def test_the_dashboard_shows_the_trail(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and "<h2>Audit" in page.text
    script = await client.get("/board.js")
    assert "api(`audit?${params}`)" in script.text  # the panel asks the same endpoint, with the viewer's token
