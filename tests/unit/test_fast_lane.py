"""The webhook's short way through a service (``shared.fast_lane``): the same answers as the full
stack, without the router, FastAPI's handler or the audit trail."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.app import create_app as gateway_app
from services.versioning.app import create_app as versioning_app
from shared import fast_lane as lanes
from shared import problems
from shared.access import RequestObserver, note_outcome
from shared.errors import NotAuthenticated
from shared.fast_lane import ServiceAPI, fast_lane
from shared.logging import configure_logging
from shared.request_context import RequestContext
from shared.settings import Settings
from tests.support import SECRET

router = APIRouter()


@router.post("/hot", status_code=202)
@fast_lane
async def hot(request: Request) -> Response:
    body = await request.body()
    if body == b"refuse":
        raise NotAuthenticated("X-Gitlab-Token is missing")
    if body == b"crash":
        raise RuntimeError("unforeseen")
    return JSONResponse({"read": body.decode(), "route": request.scope["route"].path}, status_code=202)


@router.post("/noted", status_code=202)
@fast_lane
async def noted(request: Request) -> Response:
    note_outcome(request.state, "thing queued", thing_id="t-1", pipeline_status="success")
    return Response(status_code=202)


@router.post("/cold")
async def cold(request: Request) -> Response:
    return JSONResponse({"read": (await request.body()).decode()})


class Seen:
    """A middleware that notes which paths passed it."""

    def __init__(self, app: ASGIApp, *, into: list[str]) -> None:
        self.app, self.into = app, into

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.into.append(scope["path"])
        await self.app(scope, receive, send)


def service(outer: list[str], inner: list[str]) -> ServiceAPI:
    api = ServiceAPI()
    problems.install(api)
    api.add_middleware(Seen, into=inner)
    api.add_middleware(RequestContext)
    api.add_middleware(Seen, into=outer)
    api.add_middleware(RequestObserver)
    api.include_router(router)
    return api


@pytest.fixture
def matched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the routes the router tried to match a request against."""
    tried: list[str] = []
    original = APIRoute.matches

    def counting(self: APIRoute, scope: Scope):  # type: ignore[no-untyped-def]
        tried.append(self.path)
        return original(self, scope)

    monkeypatch.setattr(APIRoute, "matches", counting)
    return tried


async def call(api: ServiceAPI, method: str, path: str, body: bytes = b"") -> httpx.Response:
    transport = httpx.ASGITransport(app=api, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        return await http.request(method, path, content=body, headers={"X-Correlation-ID": "cid-7"})


async def test_a_marked_route_is_answered_by_the_middlewares_without_the_router(matched: list[str]) -> None:
    outer: list[str] = []
    inner: list[str] = []
    answer = await call(service(outer, inner), "POST", "/hot", b"hook")
    assert answer.status_code == 202
    assert answer.json() == {"read": "hook", "route": "/hot"}
    assert answer.headers["x-correlation-id"] == "cid-7"  # the request context ran
    assert matched == []  # no route was matched: the lane answered
    assert outer == ["/hot"] and inner == ["/hot"]


async def test_the_audit_trail_is_left_out_and_other_routes_take_the_full_stack(
    matched: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Audit(Seen):  # stands for shared.audit.AuditTrail, which needs a running service
        pass

    monkeypatch.setattr(lanes, "LEFT_OUT", (*lanes.LEFT_OUT, Audit))
    api = ServiceAPI()
    problems.install(api)
    audited: list[str] = []
    api.add_middleware(Audit, into=audited)
    api.add_middleware(RequestObserver)
    api.include_router(router)
    hot_answer = await call(api, "POST", "/hot", b"a")
    cold_answer = await call(api, "POST", "/cold", b"b")
    assert (hot_answer.status_code, cold_answer.status_code) == (202, 200)
    assert audited == ["/cold"]
    assert "/cold" in matched and "/hot" in matched  # the full stack tried /hot before it found /cold


async def test_what_came_of_a_request_is_said_in_its_one_access_line(capsys: pytest.CaptureFixture[str]) -> None:
    # the webhook door's "hook queued": one line per hook, the access line, not two
    configure_logging("things")
    capsys.readouterr()
    answer = await call(service([], []), "POST", "/noted", b"hook")
    assert answer.status_code == 202
    written = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    lines = [line for line in written if line.get("logger") != "httpx"]  # the test's client's own
    assert [line["event"] for line in lines] == ["thing queued"], lines
    (line,) = lines
    assert line["logger"] == "gantry.access" and (line["route"], line["status"]) == ("/noted", 202)
    assert (line["thing_id"], line["pipeline_status"], line["correlation_id"]) == ("t-1", "success", "cid-7")


async def test_errors_are_the_same_problems_as_on_the_full_stack(matched: list[str]) -> None:
    api = service([], [])
    refused = await call(api, "POST", "/hot", b"refuse")
    crashed = await call(api, "POST", "/hot", b"crash")
    assert matched == []
    assert refused.status_code == 401
    assert refused.headers["content-type"] == problems.MEDIA_TYPE
    assert refused.json()["detail"] == "X-Gitlab-Token is missing"
    assert crashed.status_code == 500
    assert crashed.headers["content-type"] == problems.MEDIA_TYPE


async def test_another_method_on_a_lane_path_gets_the_full_stacks_405(matched: list[str]) -> None:
    answer = await call(service([], []), "GET", "/hot")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert "/hot" in matched


@pytest.mark.parametrize("create_app", [gateway_app, versioning_app], ids=["gateway", "versioning"])
def test_gitlabs_hook_takes_the_lane_at_both_doors(create_app, tmp_path) -> None:  # type: ignore[no-untyped-def]
    api = create_app(Settings(home=tmp_path, secret=SECRET))
    assert isinstance(api, ServiceAPI)
    assert api.lane_routes() == [("POST", "/webhooks/gitlab")]
