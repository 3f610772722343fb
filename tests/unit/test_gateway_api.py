"""The gateway's route API over HTTP, without Kafka: who may write, unknown targets and fields,
paged and searched lists.

The app is built by ``create_app`` as in production; only its runtime (normally made by the
lifespan, which needs Kafka) is replaced by the test's database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from services.gateway.app import create_app
from shared.outbox import UnitOfWork
from shared.settings import Settings
from tests.support import ADMIN, SECRET, token
from tests.unit.test_gateway_routes import uow  # noqa: F401 - the fixture: shop/orders, shop/cart, bank/ledger

OWNER = token("shop:project-owner", user="olga")
MEMBER = token("shop:project-member", user="mel")
DEPLOYER = token("deploy-admin", user="dora")


@pytest.fixture
async def client(uow: UnitOfWork, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    api = create_app(Settings(home=tmp_path, secret=SECRET))
    api.state.runtime = SimpleNamespace(uow=uow, secret=SECRET, parts={})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://gateway") as http:
        yield http


def route(name: str, service: str = "shop/orders", **fields: object) -> dict[str, object]:
    return {"name": name, "path": f"/{name}/**", "service": service, **fields}


async def test_a_route_to_an_unknown_service_is_404_for_whoever_may_write(client: httpx.AsyncClient) -> None:
    for who in (OWNER, DEPLOYER, ADMIN):
        lost = await client.post("/routes", json=route("lost", "shop/nothing"), headers=who)
        assert lost.status_code == 404, lost.text
        assert "'shop/nothing' is not a service Gantry knows" in lost.json()["detail"]
    assert (await client.post("/routes", json=route("lost", "shop/nothing"), headers=MEMBER)).status_code == 403
    assert (await client.post("/routes", json=route("lost", "shop/nothing"))).status_code == 401
    made = await client.post("/routes", json=route("orders"), headers=OWNER)
    assert made.status_code == 201, made.text
    moved = await client.put("/routes/orders", json={"service": "shop/gone"}, headers=OWNER)
    assert moved.status_code == 404 and "shop/gone" in moved.json()["detail"]
    assert (await client.get("/routes/orders", headers=MEMBER)).json()["service"] == "shop/orders"


async def test_unknown_body_fields_are_422_naming_them(client: httpx.AsyncClient) -> None:
    typo = await client.post("/routes", json=route("orders", strip_prefx=False), headers=OWNER)
    assert typo.status_code == 422
    assert "strip_prefx" in typo.json()["detail"] and "Extra inputs are not permitted" in typo.json()["detail"]
    assert (await client.get("/routes/orders", headers=OWNER)).status_code == 404  # nothing was made
    assert (await client.post("/routes", json=route("orders"), headers=OWNER)).status_code == 201
    typo = await client.put("/routes/orders", json={"retry": True, "path": "/o/**"}, headers=OWNER)
    assert typo.status_code == 422 and "body.retry" in typo.json()["detail"]
    assert (await client.get("/routes/orders", headers=OWNER)).json()["path"] == "/orders/**"


async def test_route_lists_are_paged_and_searched(client: httpx.AsyncClient) -> None:
    for index in range(5):
        answer = await client.post("/routes", json=route(f"cart-{index}", "shop/cart"), headers=DEPLOYER)
        assert answer.status_code == 201, answer.text
    assert (await client.post("/routes", json=route("ledger", "bank/ledger"), headers=DEPLOYER)).status_code == 201

    names: list[str] = []
    url: str | None = "/routes?q=cart&limit=2"
    while url is not None:
        page = await client.get(url, headers=MEMBER)
        assert page.status_code == 200 and len(page.json()) <= 2
        names += [r["name"] for r in page.json()]
        url = page.links.get("next", {}).get("url")
    assert names == [f"cart-{index}" for index in range(5)]
    by_target = await client.get("/routes", params={"q": "BANK/"}, headers=MEMBER)
    assert [r["name"] for r in by_target.json()] == ["ledger"] and "link" not in by_target.headers
    everything = (await client.get("/routes", params={"limit": 500}, headers=MEMBER)).json()
    assert len(everything) == 6
    assert (await client.get("/routes", params={"limit": 0}, headers=MEMBER)).status_code == 422
    bad = await client.get("/routes", params={"cursor": "not-ours"}, headers=MEMBER)
    assert bad.status_code == 400 and "cursor" in bad.json()["detail"]

    first = await client.get("/route-table", params={"limit": 4}, headers=MEMBER)
    rest = await client.get(first.links["next"]["url"], headers=MEMBER)
    orders = [e["order"] for e in first.json() + rest.json()]
    assert orders == list(range(1, 7))


async def test_metrics_are_scraped_on_each_services_own_port_never_through_the_gateway(
    client: httpx.AsyncClient,
) -> None:
    for service in ("catalog", "versioning", "release", "deploy"):
        answer = await client.get(f"/api/{service}/metrics", headers=ADMIN)
        assert answer.status_code == 404 and "own port" in answer.json()["detail"], answer.text
    own = await client.get("/metrics")
    assert own.status_code == 200 and "gantry_http_request_duration_seconds" in own.text
