"""Catalog's composition root: projects, services and service types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from sqlmodel import SQLModel

from services.catalog.api import router
from services.catalog.models import Project, Service
from services.catalog.running import ServiceRun, on_deploy_status, service_lock
from services.catalog.scm import SCM, build_scm
from shared import outbox_api
from shared.bus import Handler, lock_ahead, read_ahead, reading_ahead, with_prefetch
from shared.events import DeployStatus, Topic
from shared.service import Runtime, create_service_app
from shared.settings import Settings


@asynccontextmanager
async def _scm(runtime: Runtime) -> AsyncIterator[None]:
    s = runtime.settings
    SCM.provide(runtime, build_scm(s.gitlab_url, s.gitlab_token, s.home))
    yield


# Where services run (one still running somewhere cannot be deleted): what a batch of statuses
# reads ahead, its services locked first on PostgreSQL (one statement: no status's own lock then
# flushes what the status before it changed).
statuses_ahead = reading_ahead(
    lock_ahead(DeployStatus, lambda data: service_lock(data.service_id)),
    read_ahead(Service, DeployStatus, id="service_id"),
    read_ahead(ServiceRun, DeployStatus, service_id="service_id", environment="environment"),
)


def _subscriptions(runtime: Runtime) -> dict[str, Handler]:
    return {Topic.DEPLOY_STATUS: with_prefetch(statuses_ahead, partial(on_deploy_status, uow=runtime.uow))}


TABLES: list[type[SQLModel]] = [Project, Service, ServiceRun]


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        "catalog",
        tables=TABLES,
        routers=[router, outbox_api.router],
        subscriptions=_subscriptions,
        extensions=[_scm],
        settings=settings,
    )
