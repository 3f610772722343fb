"""Every write on record: a small service built with ``create_service_app`` as every Gantry
service is, on a real SQLite database, its writes answered over HTTP.

A change and its record commit together (one transaction); a refused or failed request is
recorded with its reason; a transaction that fails leaves no record of success.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from sqlmodel import Field, SQLModel, select

from shared.audit import RequestRecord, target_of
from shared.errors import UpstreamUnavailable
from shared.events import Envelope, ServiceChanged
from shared.outbox import TRANSACTION_HOOK, UnitOfWork, emit
from shared.schemas import REFUSE_UNKNOWN_FIELDS
from shared.service import CurrentUser, RuntimeDep, create_service_app
from shared.settings import Settings
from tests.support import SECRET, token
from tests.unit.conftest import outbox

WRITER = token("shop:project-owner", user="olga")
READER = token("shop:project-member", user="mel")


class Thing(SQLModel, table=True):
    __tablename__ = "things"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)


class ThingCreate(SQLModel):
    model_config = REFUSE_UNKNOWN_FIELDS
    name: str
    project: str = "shop"


router = APIRouter()


@router.post("/things", status_code=201)
async def create_thing(data: ThingCreate, user: CurrentUser, runtime: RuntimeDep) -> dict[str, str]:
    """Insert without looking first: a duplicate fails at commit, in the database."""
    user.require_project(data.project, "project-owner")
    async with runtime.uow.begin() as session:
        session.add(Thing(name=data.name))
    return {"name": data.name}


@router.put("/things/{name}/twice")
async def write_twice(name: str, user: CurrentUser, runtime: RuntimeDep) -> dict[str, str]:
    """Two writing transactions in one request: the first carries the record."""
    user.require_project("shop", "project-owner")
    for suffix in ("a", "b"):
        async with runtime.uow.begin() as session:
            session.add(Thing(name=f"{name}-{suffix}"))
    return {"name": name}


@router.post("/things/{name}/publish", status_code=202)
async def publish_thing(name: str, user: CurrentUser, runtime: RuntimeDep) -> dict[str, str]:
    """Commits a change, then the next step fails: the change and the failure are both on record."""
    user.require_project("shop", "project-owner")
    async with runtime.uow.begin() as session:
        changed = ServiceChanged(
            service_id="s1", project="shop", service=name, name=name, enabled=True, change="updated"
        )
        emit(session, changed)
    raise UpstreamUnavailable("the repository host did not answer: try again in a minute")


@pytest.fixture
async def uow(make_uow) -> UnitOfWork:
    return await make_uow("things", [Thing])


@pytest.fixture
async def client(uow: UnitOfWork, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    api = create_service_app("things", tables=[Thing], routers=[router], settings=Settings(home=tmp_path))
    api.state.runtime = SimpleNamespace(uow=uow, secret=SECRET, parts={})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://things") as http:
        yield http


async def records(uow: UnitOfWork) -> list[tuple[Envelope, dict[str, Any]]]:
    rows = await outbox(uow, "audit.recorded")
    envelopes = [Envelope.model_validate(json.loads(row.payload)) for row in rows]
    return [(envelope, envelope.data) for envelope in envelopes]


async def things(uow: UnitOfWork) -> list[str]:
    async with uow.sessions() as session:
        return [thing.name for thing in (await session.exec(select(Thing))).all()]


async def test_a_write_and_its_record_commit_together(client: httpx.AsyncClient, uow: UnitOfWork) -> None:
    lamp = {"name": "lamp", "project": "shop"}
    answer = await client.post("/things", json=lamp, headers={**WRITER, "x-correlation-id": "c-1"})
    assert answer.status_code == 201, answer.text
    [(envelope, data)] = await records(uow)
    assert envelope.correlation_id == "c-1" and envelope.source == "gantry/things"
    assert data["action"] == "things.create_thing" and data["recorded_by"] == "things"
    assert (data["actor"], data["roles"]) == ("olga", ["shop:project-owner"])
    assert data["target"] == {"thing": "lamp", "project": "shop"}
    assert (data["method"], data["path"], data["outcome"], data["reason"]) == ("POST", "/things", 201, None)
    assert data["changed"] is True
    assert await things(uow) == ["lamp"]
    assert not (await client.get("/healthz")).is_error and len(await records(uow)) == 1  # reads are not recorded


async def test_a_failed_transaction_leaves_no_record_of_success(client: httpx.AsyncClient, uow: UnitOfWork) -> None:
    assert (await client.post("/things", json={"name": "lamp"}, headers=WRITER)).status_code == 201
    again = await client.post("/things", json={"name": "lamp"}, headers=WRITER)
    assert again.status_code == 409  # the database refused the duplicate at commit
    [_first, (_, data)] = await records(uow)
    assert (data["outcome"], data["changed"]) == (409, False)
    assert "another request changed the same thing" in data["reason"]
    assert await things(uow) == ["lamp"]


async def test_refused_writes_are_recorded_with_their_reason(client: httpx.AsyncClient, uow: UnitOfWork) -> None:
    assert (await client.post("/things", json={"name": "lamp"})).status_code == 401
    assert (await client.post("/things", json={"name": "lamp", "project": "shop"}, headers=READER)).status_code == 403
    assert (await client.post("/things", json={"name": "lamp", "colour": "red"}, headers=WRITER)).status_code == 422
    anonymous, member, typo = (data for _, data in await records(uow))
    assert (anonymous["actor"], anonymous["roles"], anonymous["outcome"]) == (None, [], 401)
    assert "Authorization: Bearer" in anonymous["reason"]
    assert (member["actor"], member["outcome"], member["changed"]) == ("mel", 403, False)
    assert "shop:project-owner" in member["reason"] and member["target"] == {"thing": "lamp", "project": "shop"}
    assert typo["outcome"] == 422 and "colour" in typo["reason"]
    assert await things(uow) == []


async def test_a_request_is_recorded_once_however_many_transactions_it_commits(
    client: httpx.AsyncClient, uow: UnitOfWork
) -> None:
    assert (await client.put("/things/lamp/twice", headers=WRITER)).status_code == 200
    [(_, data)] = await records(uow)
    assert (data["action"], data["target"], data["outcome"]) == ("things.write_twice", {"thing": "lamp"}, 200)
    assert sorted(await things(uow)) == ["lamp-a", "lamp-b"]


async def test_a_failure_after_a_committed_change_is_on_record_too(client: httpx.AsyncClient, uow: UnitOfWork) -> None:
    assert (await client.post("/things/lamp/publish", headers=WRITER)).status_code == 502
    (_, change), (_, failure) = await records(uow)
    assert (change["outcome"], change["changed"]) == (202, True)
    assert (failure["outcome"], failure["changed"]) == (502, False)
    assert failure["request_id"] == change["request_id"] and "did not answer" in failure["reason"]
    assert len(await outbox(uow, "service.changed")) == 1


async def test_a_transaction_that_reads_only_carries_no_record(uow: UnitOfWork) -> None:
    record = RequestRecord("things", {"method": "POST", "path": "/things", "route": None})
    hooked = TRANSACTION_HOOK.set(record)
    try:
        async with uow.begin() as session:
            await session.exec(select(Thing))
        assert not record.changed
    finally:
        TRANSACTION_HOOK.reset(hooked)
    assert await records(uow) == []


def test_the_target_is_named_from_the_path_and_the_body() -> None:
    resources = "/environments/{environment}/resources"
    assert target_of(resources, {"environment": "prod"}, {"name": "db", "data": {"password": "x"}}) == {
        "environment": "prod",
        "resource": "db",
    }
    assert target_of(f"{resources}/{{name}}", {"environment": "prod", "name": "db"}, {"data": {}}) == {
        "environment": "prod",
        "resource": "db",
    }
    deployment = {"project": "shop", "service": "web", "environment": "prod", "version": "1.2", "replicas": 2}
    assert target_of("/deployments", {}, deployment) == {
        "project": "shop",
        "service": "web",
        "environment": "prod",
        "version": "1.2",
    }
    assert target_of("/projects", {}, {"code": "shop", "name": "The shop"}) == {"project": "shop"}
    assert target_of(
        "/projects/{project}/services/{service}", {"project": "shop", "service": "web"}, {"name": "W"}
    ) == {
        "project": "shop",
        "service": "web",
    }
    assert target_of("/dead-letters/{outbox_id}", {"outbox_id": 7}, None) == {"outbox_id": "7"}
    route = {"name": "orders", "path": "/orders/**", "service": "shop/orders"}
    assert target_of("/routes", {}, route) == {"route": "orders", "project": "shop", "service": "orders"}
