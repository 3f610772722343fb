"""The gateway's composition root: routes, the front-door proxy, live events and the dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

from fastapi import APIRouter, FastAPI
from sqlmodel import SQLModel

from services.gateway import audit, board, dead_letters, handlers, known_services, proxy
from services.gateway.api import events_router, page_router, router
from services.gateway.events_stream import EVENTS, event_stream
from services.gateway.models import Route
from shared import api_docs, outbox_api, webhook_door
from shared.bus import Handler
from shared.events import Envelope, Topic
from shared.runner import ServiceServer
from shared.service import Runtime, create_service_app
from shared.settings import Settings


@asynccontextmanager
async def _builtin_routes(runtime: Runtime) -> AsyncIterator[None]:
    await handlers.seed_builtin_routes(uow=runtime.uow)
    yield


def _front_door_copy() -> APIRouter:
    """The gateway's own endpoints again under /api/gateway, like every other service's."""
    prefixed = APIRouter(prefix="/api/gateway", include_in_schema=False)
    prefixed.include_router(router)
    prefixed.include_router(events_router)
    prefixed.include_router(audit.router)
    prefixed.include_router(board.router)
    prefixed.include_router(dead_letters.router)
    prefixed.include_router(outbox_api.router)
    prefixed.include_router(api_docs.router)  # /api/gateway/docs, like every service's docs
    return prefixed


def _subscriptions(runtime: Runtime) -> dict[str, Handler]:
    """Which services exist (a route may only lead to one of them); every service's audit records."""
    uow = runtime.uow

    async def on_service_created(envelope: Envelope) -> None:
        await known_services.on_service_created(envelope, uow=uow)

    async def on_service_changed(envelope: Envelope) -> None:
        await known_services.on_service_changed(envelope, uow=uow)

    async def on_audit_recorded(envelope: Envelope) -> None:
        await audit.keep_record(envelope, uow=uow)

    return {
        Topic.SERVICE_CREATED: on_service_created,
        Topic.SERVICE_CHANGED: on_service_changed,
        Topic.AUDIT_RECORDED: on_audit_recorded,
    }


TABLES: list[type[SQLModel]] = [Route, known_services.KnownService, audit.AuditEntry, dead_letters.DeadLetterDecision]


def create_app(settings: Settings | None = None) -> FastAPI:
    # Order matters: the gateway's own paths first, the catch-all proxy last.
    return create_service_app(
        "gateway",
        tables=TABLES,
        routers=[
            router,
            events_router,
            audit.router,
            board.router,
            dead_letters.router,
            outbox_api.router,
            _front_door_copy(),
            page_router,
            board.assets_router,
            webhook_door.router,
            proxy.router,
        ],
        subscriptions=_subscriptions,
        extensions=[proxy.http_client, _builtin_routes, event_stream, audit.pruning],
        settings=settings,
    )


class GatewayServer(ServiceServer):
    """uvicorn waits for open responses before it stops: end the endless event streams first."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        api = self.config.app
        runtime = getattr(getattr(api, "state", None), "runtime", None)
        if runtime is not None and EVENTS.name in runtime.parts:
            EVENTS.of(runtime).close_clients_threadsafe()
        super().handle_exit(sig, frame)
