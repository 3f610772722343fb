"""Release's composition root: environments, releases and auto-release."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from services.release import handlers
from services.release.api import router
from services.release.models import TABLES
from shared import outbox_api
from shared.bus import Handler
from shared.events import Topic
from shared.service import Runtime, create_service_app
from shared.settings import Settings


def _subscriptions(runtime: Runtime) -> dict[str, Handler]:
    return {
        Topic.SERVICE_CREATED: partial(handlers.on_service_created, uow=runtime.uow),
        Topic.VERSION_CREATED: partial(handlers.on_version_created, uow=runtime.uow),
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        "release",
        tables=TABLES,
        routers=[router, outbox_api.router],
        subscriptions=_subscriptions,
        settings=settings,
    )
