"""Versioning's composition root: hooks from the bus (and its own webhook door), pipelines, versions."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI
from sqlmodel import SQLModel

from services.versioning import handlers
from services.versioning.api import router
from services.versioning.models import KnownService, ParkedHook, Pipeline, PipelineJob, Version
from services.versioning.pipelines_api import router as pipelines_router
from shared import outbox_api, webhook_door
from shared.bus import Handler, folded, with_prefetch
from shared.events import Topic
from shared.service import Runtime, create_service_app
from shared.settings import Settings


def _subscriptions(runtime: Runtime) -> dict[str, Handler]:
    return {
        Topic.HOOK_RECEIVED: with_prefetch(
            handlers.prefetch_hooks, partial(handlers.on_hook_received, uow=runtime.uow)
        ),
        Topic.SERVICE_CREATED: partial(handlers.on_service_created, uow=runtime.uow),
        Topic.SERVICE_CHANGED: partial(handlers.on_service_changed, uow=runtime.uow),
        # the success a batch of hooks announces makes its version in that batch (ADR 3)
        Topic.PIPELINE_SUCCEEDED: folded(
            with_prefetch(
                handlers.prefetch_successes,
                partial(handlers.on_pipeline_succeeded, uow=runtime.uow, registry=runtime.settings.image_registry),
            )
        ),
    }


TABLES: list[type[SQLModel]] = [KnownService, Pipeline, PipelineJob, Version, ParkedHook]


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        "versioning",
        tables=TABLES,
        routers=[router, pipelines_router, webhook_door.router, outbox_api.router],
        subscriptions=_subscriptions,
        settings=settings,
    )
