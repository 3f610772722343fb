"""The gateway's own HTTP API: routes, the route table, live events and the dashboard page."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse

from services.gateway import domain, handlers
from services.gateway.events_stream import EventsDep, EventStream
from services.gateway.models import (
    Route,
    RouteCreate,
    RouteMatch,
    RoutePublic,
    RouteTableEntry,
    RouteUpdate,
)
from shared.auth import Principal, parse_authorization, verify_bearer
from shared.errors import InvalidInput
from shared.events import ALL_TOPICS
from shared.paging import PagesDep, SearchQuery, matches
from shared.schemas import spaces
from shared.service import BearerCredentials, CorrelationId, CurrentUser, RuntimeDep, get_runtime, oidc_verifier

router = APIRouter(tags=["routes"])
events_router = APIRouter(tags=["events"])
page_router = APIRouter(include_in_schema=False)
DASHBOARD = Path(__file__).with_name("dashboard.html")


def require_route_writer(user: Principal, *targets: str) -> None:
    """Org admins and deploy admins; a project owner for routes to that project's services."""
    projects = {domain.project_of(target) for target in targets}
    if None not in projects and all(f"{p}:project-owner" in user.roles for p in projects):
        return
    user.require_org("deploy-admin")


@router.post(
    "/routes",
    status_code=201,
    response_model=RoutePublic,
    responses={404: {"description": "the target is not a service Gantry knows"}},
)
async def create_route(data: RouteCreate, user: CurrentUser, runtime: RuntimeDep, cid: CorrelationId) -> Route:
    """Register a service's route (name and Ant-style path unique)."""
    require_route_writer(user, data.service)
    return await handlers.create_route(data, by=user.user, correlation_id=cid, uow=runtime.uow)


@router.get("/routes", response_model=list[RoutePublic])
async def read_routes(_user: CurrentUser, runtime: RuntimeDep, pages: PagesDep, q: SearchQuery = None) -> list[Route]:
    """Every route, built-in ones included, by name (`q` searches names, paths and targets)."""
    routes = [r for r in await handlers.list_routes(uow=runtime.uow) if matches(q, r.name, r.path, r.service)]
    return pages.serve(routes, lambda r: (r.name,))


@router.get("/routes/{name}", response_model=RoutePublic)
async def read_route(name: str, _user: CurrentUser, runtime: RuntimeDep) -> Route:
    """One route."""
    return await handlers.get_route(name, uow=runtime.uow)


@router.put("/routes/{name}", response_model=RoutePublic)
async def update_route(
    name: str, data: RouteUpdate, user: CurrentUser, runtime: RuntimeDep, cid: CorrelationId
) -> Route:
    """Change a route's path, target or flags (built-in routes are read-only)."""
    current = await handlers.get_route(name, uow=runtime.uow)
    require_route_writer(user, current.service, data.service or current.service)
    return await handlers.update_route(name, data, correlation_id=cid, uow=runtime.uow)


@router.delete("/routes/{name}", status_code=204)
async def delete_route(name: str, user: CurrentUser, runtime: RuntimeDep, cid: CorrelationId) -> Response:
    """Remove a route (built-in routes are read-only)."""
    current = await handlers.get_route(name, uow=runtime.uow)
    require_route_writer(user, current.service)
    await handlers.delete_route(name, correlation_id=cid, uow=runtime.uow)
    return Response(status_code=204)


@router.get("/route-table", response_model=list[RouteTableEntry])
async def read_route_table(_user: CurrentUser, runtime: RuntimeDep, pages: PagesDep) -> list[RouteTableEntry]:
    """The compiled table in match order: the first route matching a path wins."""
    table = await handlers.route_table(uow=runtime.uow)
    return pages.serve(table, lambda entry: (entry.order,))


@router.get(
    "/route-table/match",
    response_model=RouteMatch,
    responses={404: {"description": "no route matches the path"}},
)
async def match_route(path: str, _user: CurrentUser, runtime: RuntimeDep) -> RouteMatch:
    """Which route a request path goes to, and the path its target receives."""
    return await handlers.match_path(path, uow=runtime.uow)


async def stream_user(
    request: Request, _credentials: BearerCredentials, access_token: Annotated[str | None, Query()] = None
) -> Principal:
    """A bearer token in the header, or ``?access_token=`` (EventSource cannot send headers).

    Events carry deployment resources (database URLs among them): organization roles only."""
    secret, oidc = get_runtime(request).secret, oidc_verifier(request)
    if access_token and "authorization" not in request.headers:
        user = await verify_bearer(secret, access_token, oidc)
    else:
        user = await parse_authorization(secret, request.headers.get("authorization"), oidc)
    user.require_org("deploy-admin")
    return user


StreamUser = Annotated[Principal, Depends(stream_user)]


def _topics_pattern() -> str:
    """What ``chosen_topics`` takes in one ``topic=``: known topics separated by commas, spaces around."""
    space, loose = f"[{spaces()}]", f"[{spaces()},]"
    known = "(" + "|".join(re.escape(topic) for topic in ALL_TOPICS) + ")"
    return f"^{loose}*({known}{space}*(,{loose}*{known}{space}*)*{loose}*)?$"


TopicsQuery = Annotated[
    list[str] | None,
    Query(
        alias="topic",
        description="topics to keep, repeated or comma-separated (default: every topic)",
        json_schema_extra={"items": {"type": "string", "pattern": _topics_pattern()}},
    ),
]


def chosen_topics(topic: list[str] | None) -> frozenset[str]:
    names = {name.strip() for value in topic or () for name in value.split(",") if name.strip()}
    unknown = sorted(names - set(ALL_TOPICS))
    if unknown:
        raise InvalidInput(f"unknown topic {unknown[0]!r}: use one of {', '.join(ALL_TOPICS)}")
    return frozenset(names)


@events_router.get("/events")
async def stream_events(
    _user: StreamUser,
    stream: EventsDep,
    topic: TopicsQuery = None,
    since: Annotated[str | None, Query(pattern="^(beginning|now)$")] = None,
) -> StreamingResponse:
    """Server-sent events from every topic (`?topic=` filters, `?since=beginning` replays)."""
    topics = chosen_topics(topic)
    return StreamingResponse(
        _frames(stream, topics, since == "beginning"),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _frames(stream: EventStream, topics: frozenset[str], from_beginning: bool) -> AsyncIterator[str]:
    if from_beginning:
        async with stream.replay(topics) as client:
            async for frame in client.frames():
                yield frame
        return
    client = stream.subscribe(topics)
    try:
        async for frame in client.frames():
            yield frame
    finally:
        stream.unsubscribe(client)


@events_router.get("/events/recent")
async def read_recent_events(
    _user: StreamUser,
    stream: EventsDep,
    topic: TopicsQuery = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 200,
) -> list[dict[str, object]]:
    """The latest events (oldest first), for the dashboard's first paint."""
    return stream.recent(chosen_topics(topic), limit)


@page_router.get("/", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    """The state board: what runs where, chains, failures (static page, no external assets)."""
    return HTMLResponse(_dashboard_html(), headers={"Cache-Control": "no-cache"})


@lru_cache(maxsize=1)
def _dashboard_html() -> str:
    return DASHBOARD.read_text(encoding="utf-8").replace("/*TOPICS*/[]", json.dumps(ALL_TOPICS))
