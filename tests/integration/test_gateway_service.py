"""The gateway against a real broker and a real upstream: front door, routes, live events."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from services.catalog.app import create_app as create_catalog
from services.gateway.app import GatewayServer, create_app
from shared.events import DeployStatus, Envelope, RouteChanged, ServiceCreated, Topic, new_event
from shared.settings import Settings
from tests.support import ADMIN, TopicReader, eventually, running, serving, token

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(service_settings: Settings, ports: dict[str, socket.socket]) -> Settings:
    """The gateway on each real broker/database pair, its port block on the bound sockets."""
    return service_settings.model_copy(update={"port_base": ports["gateway"].getsockname()[1]})


def echo_app() -> FastAPI:
    """An upstream that answers with what it received."""
    echo = FastAPI()

    @echo.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def answer(path: str, request: Request) -> Response:
        if path == "big":
            return Response(b"x" * 1_000_000, media_type="application/octet-stream")
        if path == "missing":
            return JSONResponse({"detail": "nothing here"}, status_code=404)
        seen = {
            "method": request.method,
            "raw_path": request.scope["raw_path"].decode(),
            "query": request.url.query,
            "body": (await request.body()).decode(),
            "headers": dict(request.headers),
            "port": request.scope["server"][1],
        }
        status = 201 if request.method == "POST" else 200
        return JSONResponse(seen, status_code=status, headers={"location": "/made/1", "x-internal": "1"})

    return echo


async def test_front_door_forwards_calls_and_answers(settings: Settings, ports: dict[str, socket.socket]) -> None:
    async with (
        serving(echo_app(), ports["catalog"], lifespan="off"),
        running(create_app(settings)) as client,
    ):
        answer = await client.post(
            "/api/catalog/projects/shop/services?dry=1&name=a%2Fb",
            content=b'{"code": "web"}',
            headers={**ADMIN, "Content-Type": "application/json", "X-Correlation-Id": "cid-42", "Cookie": "sid=secret"},
        )
        assert answer.status_code == 201, answer.text
        seen = answer.json()
        assert seen["method"] == "POST"
        assert seen["port"] == settings.port("catalog")
        assert seen["raw_path"] == "/projects/shop/services"
        assert seen["query"] == "dry=1&name=a%2Fb"
        assert seen["body"] == '{"code": "web"}'
        assert seen["headers"]["authorization"] == ADMIN["Authorization"]
        assert seen["headers"]["content-type"] == "application/json"
        assert seen["headers"]["x-correlation-id"] == "cid-42"
        assert seen["headers"]["x-forwarded-prefix"] == "/api/catalog"  # where its docs are reached
        assert "cookie" not in seen["headers"]
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["location"] == "/made/1"
        assert "x-internal" not in answer.headers
        assert answer.headers["x-correlation-id"] == "cid-42"

        # No correlation id: the gateway makes one, passes it on and returns it.
        answer = await client.delete("/api/catalog/projects/shop/services/web%20app", headers=ADMIN)
        seen = answer.json()
        assert seen["method"] == "DELETE"
        assert seen["raw_path"] == "/projects/shop/services/web%20app"
        assert len(seen["headers"]["x-correlation-id"]) == 36
        assert seen["headers"]["x-correlation-id"] == answer.headers["x-correlation-id"]

        missing = await client.get("/api/catalog/missing")
        assert (missing.status_code, missing.json()) == (404, {"detail": "nothing here"})
        big = await client.get("/api/catalog/big")
        assert big.status_code == 200 and big.content == b"x" * 1_000_000

        # GitLab's webhook is the gateway's own (see test_webhook_door.py): never forwarded.
        stranger = await client.post(
            "/webhooks/gitlab", json={"object_kind": "pipeline"}, headers={"X-Gitlab-Event": "Pipeline Hook"}
        )
        assert stranger.status_code == 401 and "X-Gitlab-Token is missing" in stranger.json()["detail"]


async def test_front_door_explains_what_is_wrong(settings: Settings, ports) -> None:
    release_url = settings.service_url("release")
    ports["release"].close()  # nothing listens there
    async with running(create_app(settings)) as client:
        down = await client.get("/api/release/environments", headers=ADMIN)
        assert down.status_code == 503 and down.headers["content-type"] == "application/problem+json"
        assert down.json() == {
            "type": "urn:gantry:problem:unavailable",
            "title": "Service Unavailable",
            "status": 503,
            "code": "unavailable",
            "detail": f"the release service is not reachable at {release_url}: is it running? (gantry up starts it)",
        }
        unknown = await client.get("/api/billing/invoices", headers=ADMIN)
        assert unknown.status_code == 404
        assert unknown.json()["detail"].startswith("unknown service 'billing': use one of catalog")
        own = await client.get("/api/gateway/nothing-here", headers=ADMIN)
        assert own.status_code == 404 and "the gateway has no endpoint" in own.json()["detail"]


async def test_each_service_s_docs_load_its_own_document_through_the_gateway(
    settings: Settings, ports: dict[str, socket.socket]
) -> None:
    """/api/catalog/docs is catalog's Swagger UI, which loads catalog's document (not the gateway's),
    whose server is the gateway's /api/catalog; a 405 from catalog keeps its Allow header."""
    catalog = create_catalog(settings)  # its docs and its routing need no database
    async with serving(catalog, ports["catalog"], lifespan="off"), running(create_app(settings)) as client:
        page = await client.get("/api/catalog/docs")
        assert page.status_code == 200 and 'url: "openapi.json"' in page.text
        script = await client.get("/api/catalog/docs/assets/swagger-ui-bundle.js")
        assert script.status_code == 200 and "SwaggerUIBundle" in script.text
        document = (await client.get("/api/catalog/openapi.json")).json()
        assert document["info"]["title"] == "Gantry catalog" and "/projects" in document["paths"]
        assert document["servers"] == [{"url": "/api/catalog"}]
        refused = await client.put("/api/catalog/projects", headers=ADMIN)
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, POST"
        assert refused.json()["code"] == "method-not-allowed"
        own = (await client.get("/api/gateway/openapi.json")).json()
        assert own["info"]["title"] == "Gantry gateway" and own["servers"] == [{"url": "/api/gateway"}]


def service_created(project: str, service: str) -> Envelope:
    data = ServiceCreated(
        service_id=uuid.uuid4().hex,
        project=project,
        service=service,
        name=service,
        group=project,
        type="python",
        repository_url="",
        repository_web_url="",
        repository_path="",
        scm_project_id="1",
    )
    return new_event(Topic.SERVICE_CREATED, data, source="gantry/catalog", subject=f"{project}/{service}")


async def test_routes_over_rest_announce_every_change(settings: Settings, publish) -> None:
    name = f"orders-{uuid.uuid4().hex[:6]}"
    target = f"shop/{name}"  # a service of its own: the gateway learns it from catalog's event
    async with (
        running(create_app(settings)) as client,
        TopicReader(settings.require_bootstrap(), Topic.ROUTE_CHANGED.value) as reader,
    ):
        body = {"name": name, "path": f"/{name}/**", "service": target}
        unknown = await client.post("/routes", json=body, headers=ADMIN)
        assert unknown.status_code == 404 and "not a service Gantry knows" in unknown.json()["detail"]
        announced = service_created("shop", name)
        await publish(Topic.SERVICE_CREATED.value, announced.model_dump_json().encode(), announced.data["service_id"])

        listed = await client.get("/api/gateway/routes", headers=token("shop:project-member"))
        assert listed.status_code == 200
        builtin = {r["name"]: r for r in listed.json()}
        assert builtin["catalog-api"]["path"] == "/api/catalog/**" and builtin["catalog-api"]["builtin"]

        assert (await client.post("/routes", json=body)).status_code == 401
        member = await client.post("/routes", json=body, headers=token("shop:project-member"))
        assert member.status_code == 403

        async def create() -> httpx.Response | None:
            answer = await client.post(
                "/api/gateway/routes",
                json=body,
                headers={**token("shop:project-owner"), "X-Correlation-Id": "route-cid"},
            )
            return None if answer.status_code == 404 else answer

        created = await eventually(create)
        assert created.status_code == 201, created.text
        assert created.json() | {"created_at": None, "updated_at": None} == {
            **body,
            "strip_prefix": True,
            "retryable": False,
            "builtin": False,
            "created_by": "alice",
            "created_at": None,
            "updated_at": None,
        }
        event = await reader.wait_for(lambda _t, v: v["subject"] == name)
        assert event["correlation_id"] == "route-cid"
        assert RouteChanged.model_validate(event["data"]).change == "created"

        clash = await client.post("/routes", json={**body, "name": "x" + name}, headers=ADMIN)
        assert clash.status_code == 409 and repr(name) in clash.json()["detail"]
        bad = await client.post("/routes", json={**body, "path": "/a/**/b"}, headers=ADMIN)
        assert bad.status_code == 422 and "'**' may only be the last" in bad.json()["detail"]
        read_only = await client.put("/routes/catalog-api", json={"retryable": True}, headers=ADMIN)
        assert read_only.status_code == 409 and "built-in routes are read-only" in read_only.text
        gone = await client.delete("/routes/gitlab-webhook", headers=ADMIN)
        assert gone.status_code == 409

        changed = await client.put(f"/routes/{name}", json={"retryable": True}, headers=ADMIN)
        assert changed.status_code == 200 and changed.json()["retryable"] is True
        table = (await client.get("/route-table", headers=ADMIN)).json()
        assert table[0]["name"] == "gitlab-webhook"
        assert [e["order"] for e in table] == list(range(1, len(table) + 1))
        match = await client.get("/route-table/match", params={"path": f"/{name}/7"}, headers=ADMIN)
        assert match.json()["route"]["name"] == name and match.json()["forward_path"] == "/7"

        assert (await client.delete(f"/routes/{name}", headers=ADMIN)).status_code == 204
        assert (await client.get(f"/routes/{name}", headers=ADMIN)).status_code == 404
        for change in ("updated", "deleted"):
            await reader.wait_for(route_change(name, change))


def route_change(name: str, change: str) -> Callable[[str, dict[str, Any]], bool]:
    return lambda _topic, value: value["subject"] == name and value["data"]["change"] == change


def deploy_status(state: Literal["progressing", "succeeded", "failed"]) -> Envelope:
    data = DeployStatus(
        service_id=uuid.uuid4().hex,
        project="shop",
        service="web",
        deployment_id=uuid.uuid4().hex,
        environment="dev",
        version="1.0.0",
        state=state,
        desired=1,
    )
    return new_event(Topic.DEPLOY_STATUS, data, source="gantry/deploy", subject="shop/web")


@pytest.fixture
async def publish(settings: Settings) -> AsyncIterator[Any]:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.require_bootstrap(),
        acks="all",
        enable_idempotence=settings.kafka_idempotence,
    )
    await producer.start()

    async def send(topic: str, value: bytes, key: str = "k") -> None:
        await producer.send_and_wait(topic, value, key=key.encode())

    yield send
    await producer.stop()


async def read_sse(response: httpx.Response, *ids: str) -> list[tuple[str, dict[str, Any]]]:
    """Events of an SSE response, as (event name, JSON data), until every one of ``ids`` came."""
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data += line.removeprefix("data: ")
        elif line == "" and data:
            events.append((name, json.loads(data)))
            name, data = "message", ""
            if set(ids) <= {event.get("id") for _name, event in events}:
                return events
    raise AssertionError(f"the stream ended after {events}")


async def test_live_events_reach_dashboards(settings: Settings, ports: dict[str, socket.socket], publish) -> None:
    url = f"http://127.0.0.1:{settings.port('gateway')}"
    viewer = token("deploy-admin", user="viewer")["Authorization"].split()[1]
    member = token("shop:project-member", user="member")["Authorization"].split()[1]
    async with serving(create_app(settings), ports["gateway"]), httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/events/recent")).status_code == 401
        assert (await http.get("/events/recent", params={"access_token": "nope"})).status_code == 401
        # events carry deployment resources (database URLs): organization roles only
        assert (await http.get("/events/recent", params={"access_token": member})).status_code == 403
        bad_topic = await http.get("/events/recent", params={"access_token": viewer, "topic": "x"})
        assert bad_topic.status_code == 422

        query = {"access_token": viewer, "topic": "deploy.status"}
        async with http.stream("GET", "/api/gateway/events", params=query, timeout=30) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            other = Envelope(
                type="service.created",
                source="test",
                subject="shop/other",
                correlation_id="c",
                data={"note": "not a deploy status"},
            )
            await publish("service.created", other.model_dump_json().encode())
            first, second = deploy_status("progressing"), deploy_status("succeeded")
            for envelope in (first, second):
                await publish("deploy.status", envelope.model_dump_json().encode())
            received = await asyncio.wait_for(read_sse(stream, first.id, second.id), 30)
        assert [(n, e["id"]) for n, e in received] == [("deploy.status", first.id), ("deploy.status", second.id)]
        assert received[0][1]["data"]["state"] == "progressing"

        async def recent() -> list[dict[str, Any]]:
            answer = await http.get("/events/recent", headers={"Authorization": f"Bearer {viewer}"})
            ids = [item["event"].get("id") for item in answer.json()]
            return answer.json() if {first.id, second.id, other.id} <= set(ids) else []

        items = await eventually(recent)
        mine = [i for i in items if i["event"].get("id") in {first.id, other.id}]
        assert {i["topic"] for i in mine} == {"deploy.status", "service.created"}
        only = await http.get("/events/recent", params={"access_token": viewer, "topic": "deploy.status"})
        assert {i["topic"] for i in only.json()} == {"deploy.status"}

        replay = {"access_token": viewer, "topic": "deploy.status", "since": "beginning"}
        async with http.stream("GET", "/events", params=replay, timeout=30) as stream:
            replayed = await asyncio.wait_for(read_sse(stream, first.id, second.id), 30)
        assert {name for name, _event in replayed} == {"deploy.status"}


async def test_a_starting_gateway_shows_events_published_before_it_started(settings: Settings, publish) -> None:
    before = deploy_status("failed")
    await publish("deploy.status", before.model_dump_json().encode())
    async with running(create_app(settings)) as client:

        async def recent() -> list[str] | None:
            answer = await client.get("/events/recent?topic=deploy.status&limit=200", headers=ADMIN)
            ids = [item["event"]["id"] for item in answer.json()]
            return ids if before.id in ids else None

        await eventually(recent)


async def test_stopping_ends_open_event_streams_at_once(settings: Settings, ports: dict[str, socket.socket]) -> None:
    # In a thread of its own, as under `python -m`, where the stop arrives as a signal.
    api = create_app(settings)
    config = uvicorn.Config(api, log_config=None, lifespan="on", timeout_graceful_shutdown=20)
    server = GatewayServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [ports["gateway"]]})
    thread.start()
    try:
        await eventually(lambda: _true(server.started), timeout=60)
        url = f"http://127.0.0.1:{settings.port('gateway')}/events"
        async with httpx.AsyncClient() as http, http.stream("GET", url, headers=ADMIN) as stream:
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            started = time.monotonic()
            server.handle_exit(15, None)
            async for _line in lines:
                pass  # the stream ends instead of holding the shutdown for 20 s
            assert time.monotonic() - started < 15  # well below the 20 s graceful timeout
        await asyncio.to_thread(thread.join, 15)
        assert not thread.is_alive()
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)


async def _true(value: bool) -> bool:
    return value


async def test_dashboard_page_is_self_contained(settings: Settings) -> None:
    async with running(create_app(settings)) as client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        script = await client.get("/board.js")
        assert "EventSource" in script.text and '"deploy.status"' in page.text
        for text in (page.text, script.text, (await client.get("/board.css")).text):
            assert "http://" not in text and "https://" not in text
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
