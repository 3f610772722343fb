"""Versioning's composition root: webhook intake, pipelines and versions."""
from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from services.versioning import handlers
from services.versioning.api import router
from services.versioning.models import KnownService, ParkedHook, Pipeline, Version
from shared.events import Topic
from shared.service import Runtime, create_service_app
from shared.settings import Settings


def _subscriptions(runtime: Runtime):  # type: ignore[no-untyped-def]
    return {
        Topic.SERVICE_CREATED: partial(handlers.on_service_created, uow=runtime.uow, secret=runtime.secret),
        Topic.PIPELINE_SUCCEEDED: partial(
            handlers.on_pipeline_succeeded, uow=runtime.uow, registry=runtime.settings.image_registry
        ),
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        "versioning",
        tables=[KnownService, Pipeline, Version, ParkedHook],
        routers=[router],
        subscriptions=_subscriptions,
        settings=settings,
    )
