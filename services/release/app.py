"""Release's composition root: environments, releases and auto-release."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from services.release import environments, handlers, lifecycle
from services.release.api import router
from services.release.models import TABLES
from shared import outbox_api
from shared.bus import Handler, with_prefetch
from shared.events import Topic
from shared.service import Runtime, create_service_app
from shared.settings import Settings


def _subscriptions(runtime: Runtime) -> dict[str, Handler]:
    return {
        Topic.SERVICE_CREATED: partial(lifecycle.on_service_created, uow=runtime.uow),
        Topic.SERVICE_CHANGED: partial(lifecycle.on_service_changed, uow=runtime.uow),
        Topic.VERSION_CREATED: with_prefetch(
            handlers.prefetch_versions, partial(handlers.on_version_created, uow=runtime.uow)
        ),
        Topic.DEPLOY_STATUS: with_prefetch(
            lifecycle.prefetch_statuses, partial(lifecycle.on_deploy_status, uow=runtime.uow)
        ),
    }


@asynccontextmanager
async def _announce_environments(runtime: Runtime) -> AsyncIterator[None]:
    """Environments made before Gantry announced them are announced once, so deploy learns them."""
    await environments.announce_unannounced(uow=runtime.uow)
    yield


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        "release",
        tables=TABLES,
        routers=[router, outbox_api.router],
        subscriptions=_subscriptions,
        extensions=[_announce_environments],
        settings=settings,
    )
