"""A small service built with ``create_service_app`` as every Gantry service is ("things": one read,
one write that emits an event), served in-process over HTTP on a real SQLite unit of work. The
metrics and tracing tests watch what the shared service shape does around its requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import httpx
from fastapi import APIRouter

from shared.errors import NotFound
from shared.events import ServiceChanged
from shared.outbox import UnitOfWork, emit
from shared.service import CurrentUser, RuntimeDep, create_service_app
from shared.settings import Settings
from tests.support import SECRET, token

OWNER = token("shop:project-owner", user="olga")
router = APIRouter()


@router.get("/things/{name}")
async def read_thing(name: str, user: CurrentUser) -> dict[str, str]:
    if name == "missing":
        raise NotFound("no thing missing")
    return {"name": name, "by": user.user}


@router.post("/things/{name}/changes", status_code=202)
async def change_thing(name: str, user: CurrentUser, runtime: RuntimeDep) -> dict[str, str]:
    async with runtime.uow.begin() as session:
        emit(
            session,
            ServiceChanged(service_id="s1", project="shop", service=name, name=name, enabled=True, change="updated"),
        )
    return {"name": name}


@asynccontextmanager
async def things_client(uow: UnitOfWork, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the things service, its runtime the given unit of work (no broker)."""
    api = create_service_app("things", tables=[], routers=[router], settings=settings)
    api.state.runtime = SimpleNamespace(uow=uow, secret=SECRET, parts={}, faust_app=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://things") as http:
        yield http
