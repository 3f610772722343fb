"""Each request's correlation id, from the pure ASGI middleware every service runs."""

from __future__ import annotations

import uuid

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.request_context import RequestContext


async def echo(request: Request) -> JSONResponse:
    bound = structlog.contextvars.get_contextvars().get("correlation_id")
    return JSONResponse({"state": request.state.correlation_id, "logged_as": bound})


async def choose(request: Request) -> JSONResponse:
    request.state.correlation_id = "chosen-by-the-handler"  # as the webhook door does
    return JSONResponse({}, status_code=202, headers={"X-Correlation-ID": "stale"})


def client() -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/echo", echo), Route("/choose", choose, methods=["POST"])])
    app.add_middleware(RequestContext)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


async def test_a_given_correlation_id_is_kept_logged_and_answered() -> None:
    async with client() as http:
        answer = await http.get("/echo", headers={"X-Correlation-ID": "cid-42"})
    assert answer.json() == {"state": "cid-42", "logged_as": "cid-42"}
    assert answer.headers["x-correlation-id"] == "cid-42"
    assert structlog.contextvars.get_contextvars().get("correlation_id") is None  # unbound after


async def test_without_one_a_new_id_is_made_per_request() -> None:
    async with client() as http:
        first, second = await http.get("/echo"), await http.get("/echo")
    for answer in (first, second):
        assert str(uuid.UUID(answer.headers["x-correlation-id"])) == answer.json()["state"]
    assert first.headers["x-correlation-id"] != second.headers["x-correlation-id"]


async def test_the_answer_carries_the_id_the_handler_chose_once() -> None:
    async with client() as http:
        answer = await http.post("/choose", headers={"X-Correlation-ID": "from-the-caller"})
    assert answer.status_code == 202
    assert answer.headers.get_list("x-correlation-id") == ["chosen-by-the-handler"]
