"""Versioning's HTTP API: versions and pipelines of a service (GitLab's webhook: ``shared.webhook_door``)."""

from __future__ import annotations

from fastapi import APIRouter

from services.versioning import handlers
from services.versioning.models import Pipeline, PipelinePublic, Version, VersionPublic
from shared.auth import PROJECT_ROLES
from shared.service import CurrentUser, RuntimeDep

router = APIRouter(tags=["versioning"])


@router.get("/projects/{project}/services/{service}/versions", response_model=list[VersionPublic])
async def read_versions(project: str, service: str, user: CurrentUser, runtime: RuntimeDep) -> list[Version]:
    """The service's versions, newest first: one per successful pipeline."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.list_versions(project, service, uow=runtime.uow)


@router.get("/projects/{project}/services/{service}/pipelines", response_model=list[PipelinePublic])
async def read_pipelines(project: str, service: str, user: CurrentUser, runtime: RuntimeDep) -> list[Pipeline]:
    """The service's pipelines with their latest status, newest first."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.list_pipelines(project, service, uow=runtime.uow)
