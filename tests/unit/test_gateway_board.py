"""The state board's reads at the gateway, without Kafka: the events the stream keeps grouped into
timed chains, dead letters with reasons a person reads, an org admin's retry or discard (through the
outbox), and what each role may see or do."""

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

from services.gateway import audit, chains, dead_letters, domain, known_services
from services.gateway.app import create_app
from services.gateway.events_stream import EventStream, StreamItem
from services.gateway.models import Route
from shared.auth import Principal
from shared.outbox import OutboxMessage, UnitOfWork
from shared.settings import Settings
from tests.support import SECRET, token

START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
ORG_ADMIN, DEPLOYER = token("org-admin", user="root"), token("deploy-admin", user="dora")
MEMBER, STRANGER = token("shop:project-member", user="pam"), token("bank:project-owner", user="bob")
PYDANTIC_DUMP = (
    "undecodable: 2 validation errors for Envelope\nsource\n  Field required [type=missing, input_value={}, "
    "input_type=dict]\n    For further information visit https://errors.pydantic.dev/2.14/v/missing\n"
    "data.project\n  Input should be a valid string [type=string_type, input_value=3, input_type=int]\n"
    "    For further information visit https://errors.pydantic.dev/2.14/v/string_type"
)


def envelope(topic: str, correlation: str, ms: int, project: str | None = "shop", **data: Any) -> dict[str, Any]:
    named = {"project": project, "service": "web"} if project else {}
    return {
        "id": f"{topic}-{correlation}-{ms}",
        "type": topic,
        "source": "gantry/test",
        "time": (START + timedelta(milliseconds=ms)).isoformat(),
        "subject": "svc-1",
        "correlation_id": correlation,
        "data": {**named, **data},
    }


def kept(topic: str, event: dict[str, Any], offset: int, partition: int = 0) -> StreamItem:
    """Kept as the gateway keeps a record read from the bus: its value's bytes, decoded when shown."""
    return StreamItem(1_700_000_000_000 + offset, topic, partition, offset, "svc-1", json.dumps(event).encode())


def dead(topic: str, reason: str, value: str, offset: int, ms: int = 900) -> StreamItem:
    record = {
        "failed_at": (START + timedelta(milliseconds=ms)).isoformat(),
        "topic": topic,
        "consumer": "deploy",
        "reason": reason,
        "value": value,
    }
    return kept(f"{topic}.dlq", record, offset)


def a_busy_bus() -> list[StreamItem]:
    """Two chains of shop (one failed, with a dead letter), one of bank, an audit record, an undecodable letter."""
    poison = envelope("deploy.requested", "c-deploy", 40)
    return [
        kept("deploy.status", envelope("deploy.status", "c-deploy", 1250, state="failed", desired=2, available=0), 5),
        kept(
            "gitlab.hook.received",
            envelope(
                "gitlab.hook.received",
                "c-hook",
                0,
                project=None,
                event="Pipeline Hook",
                hook={"object_attributes": {"status": "success", "ref": "main"}},
            ),
            1,
        ),
        kept("pipeline.succeeded", envelope("pipeline.succeeded", "c-hook", 58), 2),
        kept("version.created", envelope("version.created", "c-hook", 141, version="1.0.0"), 3),
        kept(
            "deploy.requested", envelope("deploy.requested", "c-deploy", 0, version="1.0.0", environment="staging"), 4
        ),
        kept("version.created", envelope("version.created", "c-bank", 7, project="bank", version="2.0.0"), 6),
        kept("audit.recorded", envelope("audit.recorded", "c-deploy", 1, project=None, target={"project": "shop"}), 7),
        dead(
            "deploy.requested",
            "poison: deploy.requested x has unusable data for DeployRequested: replicas: Input "
            "should be greater than or equal to 1",
            json.dumps(poison),
            8,
            ms=60,
        ),
        dead("service.changed", PYDANTIC_DUMP, '{"type": "service.changed"}', 9),
    ]


@pytest.fixture
async def uow(make_uow) -> UnitOfWork:
    return await make_uow(
        "gateway", [Route, known_services.KnownService, audit.AuditEntry, dead_letters.DeadLetterDecision]
    )


@pytest.fixture
async def client(uow: UnitOfWork, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    stream = EventStream("127.0.0.1:9", 10)
    for item in a_busy_bus():
        stream.accept(item, live=False)
    api = create_app(Settings(home=tmp_path, secret=SECRET))
    api.state.runtime = SimpleNamespace(uow=uow, secret=SECRET, parts={"events": stream})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://gateway") as http:
        yield http


def test_dead_letter_reasons_read_as_one_short_message_per_error() -> None:
    assert domain.readable_reasons(PYDANTIC_DUMP) == (
        "not a Gantry event",
        ["field `source`: required", "field `data.project`: should be a valid string"],
    )
    poison = "poison: deploy.status 1 has unusable data for DeployStatus: project: Field required; desired: Input should be a valid integer"
    assert domain.readable_reasons(poison) == (
        "data does not fit DeployStatus",
        ["field `project`: required", "field `desired`: should be a valid integer"],
    )
    assert domain.readable_reasons("undecodable: Expecting value: line 1 column 1 (char 0)") == (
        "not a Gantry event",
        ["not JSON: Expecting value: line 1 column 1 (char 0)"],
    )
    assert domain.readable_reasons("failed after retries: RuntimeError('boom')") == (
        "failed after retries",
        ["RuntimeError('boom')"],
    )


def test_chains_group_by_correlation_and_time_each_hop_to_the_millisecond() -> None:
    viewer = Principal(user="root", roles=frozenset({"org-admin"}))
    shown = {chain.correlation_id: chain for chain in chains.chains(a_busy_bus(), viewer, limit=10)}
    assert set(shown) == {"c-hook", "c-deploy", "c-bank"}, "audit records are the audit panel's, not a chain's"
    hook = shown["c-hook"]
    assert [(hop.topic, hop.at_ms) for hop in hook.hops] == [
        ("gitlab.hook.received", 0),
        ("pipeline.succeeded", 58),
        ("version.created", 141),
    ]
    assert hook.project == "shop" and hook.duration_ms == 141 and not hook.failed
    assert hook.hops[0].summary == "Pipeline Hook · success · main"
    deploy = shown["c-deploy"]
    assert [hop.topic for hop in deploy.hops] == ["deploy.requested", "deploy.requested.dlq", "deploy.status"]
    assert deploy.failed and [hop.failed for hop in deploy.hops] == [False, True, True]
    assert "field `replicas`: should be greater than or equal to 1" in deploy.hops[1].summary
    assert deploy.hops[2].summary == "failed · 0/2 available" and deploy.duration_ms == 1250
    newest_first = [chain.correlation_id for chain in chains.chains(a_busy_bus(), viewer, limit=2)]
    assert newest_first == ["c-deploy", "c-hook"]


async def test_project_roles_see_their_projects_chains_without_the_events_data(client: httpx.AsyncClient) -> None:
    every = (await client.get("/chains", headers=DEPLOYER)).json()
    assert {chain["correlation_id"] for chain in every} == {"c-hook", "c-deploy", "c-bank"}
    assert every[0]["hops"][0]["data"] is not None
    theirs = (await client.get("/api/gateway/chains", headers=MEMBER)).json()
    assert {chain["correlation_id"] for chain in theirs} == {"c-hook", "c-deploy"}
    assert all(hop["data"] is None for chain in theirs for hop in chain["hops"])
    assert [chain["correlation_id"] for chain in (await client.get("/chains", headers=STRANGER)).json()] == ["c-bank"]
    assert (await client.get("/chains")).status_code == 401
    assert (await client.get("/chains?limit=101", headers=DEPLOYER)).status_code == 422


async def test_the_viewer_learns_what_the_board_may_offer(client: httpx.AsyncClient) -> None:
    cases = [(ORG_ADMIN, (True, True, True)), (DEPLOYER, (True, True, False)), (MEMBER, (False, False, False))]
    for headers, (every_project, deploy, decide) in cases:
        me = (await client.get("/me", headers=headers)).json()
        assert (me["reads_every_project"], me["may_deploy"], me["may_decide_dead_letters"]) == (
            every_project,
            deploy,
            decide,
        )
    assert (await client.get("/me", headers=MEMBER)).json()["projects"] == ["shop"]
    assert (await client.get("/me")).status_code == 401


async def test_dead_letters_are_listed_with_readable_reasons_for_whoever_may_read_them(
    client: httpx.AsyncClient,
) -> None:
    letters = (await client.get("/dlq", headers=DEPLOYER)).json()
    assert [(d["original_topic"], d["headline"]) for d in letters] == [
        ("service.changed", "not a Gantry event"),
        ("deploy.requested", "data does not fit DeployRequested"),
    ]
    assert letters[0]["errors"] == ["field `source`: required", "field `data.project`: should be a valid string"]
    assert letters[1]["value"] is not None and letters[1]["decision"] is None
    assert letters[1]["consumer"] == "deploy", "which service gave up on it"
    theirs = (await client.get("/dlq", headers=MEMBER)).json()
    assert [(d["original_topic"], d["value"]) for d in theirs] == [("deploy.requested", None)], (
        "theirs, without the value"
    )
    assert (await client.get("/dlq", headers=STRANGER)).json() == []


async def test_an_org_admin_retries_a_dead_letter_through_the_outbox_once(
    client: httpx.AsyncClient, uow: UnitOfWork
) -> None:
    address = "/dlq/deploy.requested.dlq/0/8"
    for refused in (DEPLOYER, MEMBER):
        answer = await client.post(f"{address}/retry", headers=refused)
        assert answer.status_code == 403 and "org-admin" in answer.json()["detail"]
    retried = await client.post(f"/api/gateway{address}/retry", headers=ORG_ADMIN)
    assert retried.status_code == 200, retried.text
    assert (retried.json()["decision"], retried.json()["decided_by"]) == ("retried", "root")
    async with uow.sessions() as session:
        sent = (await session.exec(select(OutboxMessage).where(OutboxMessage.topic != "audit.recorded"))).all()
    assert [(row.topic, row.event_id, row.key) for row in sent] == [
        ("deploy.requested", "deploy.requested-c-deploy-40", "svc-1")
    ], "the same event, on its own topic, keyed as before"
    again = await client.post(f"{address}/retry", headers=ORG_ADMIN)
    assert again.status_code == 409 and "retried already" in again.json()["detail"]
    listed = (await client.get("/dlq", headers=ORG_ADMIN)).json()
    assert [d["decision"] for d in listed] == [None, "retried"]


async def test_an_event_that_is_none_can_only_be_discarded(client: httpx.AsyncClient) -> None:
    address = "/dlq/service.changed.dlq/0/9"
    refused = await client.post(f"{address}/retry", headers=ORG_ADMIN)
    assert refused.status_code == 409 and "discard it" in refused.json()["detail"]
    assert (await client.delete(address, headers=DEPLOYER)).status_code == 403
    discarded = await client.delete(address, headers=ORG_ADMIN)
    assert discarded.status_code == 200 and discarded.json()["decision"] == "discarded"
    missing = await client.delete("/dlq/service.changed.dlq/0/99", headers=ORG_ADMIN)
    assert missing.status_code == 404 and "GET /api/gateway/dlq" in missing.json()["detail"]
    assert (await client.delete("/dlq/service.changed/0/9", headers=ORG_ADMIN)).status_code == 422


async def test_the_board_page_and_its_assets_are_served_without_external_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and '<script src="board.js">' in page.text
    for asset, kind in (("/board.js", "javascript"), ("/board.css", "css")):
        answer = await client.get(asset)
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
        assert "http://" not in answer.text and "https://" not in answer.text
    assert "https://" not in page.text and "http://" not in page.text


def test_dead_letters_are_kept_apart_so_a_busy_bus_never_pushes_them_out() -> None:
    stream = EventStream("127.0.0.1:9", 10, recent=3)
    stream.accept(dead("service.changed", PYDANTIC_DUMP, "{}", 1), live=False)
    for offset in range(2, 8):
        stream.accept(kept("pipeline.succeeded", envelope("pipeline.succeeded", "c", offset), offset), live=False)
    assert [item.offset for item in stream.history()] == [5, 6, 7]
    assert [item.offset for item in stream.dead_letters()] == [1]
