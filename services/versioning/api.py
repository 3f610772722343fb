"""Versioning's HTTP API: versions and pipelines of a service (GitLab's webhook: ``shared.webhook_door``)."""

from __future__ import annotations

from fastapi import APIRouter

from services.versioning import handlers
from services.versioning.models import Pipeline, PipelinePublic, Version, VersionPublic
from shared.paging import PagesDep, SearchQuery, matches
from shared.service import CurrentUser, RuntimeDep

router = APIRouter(tags=["versioning"])


@router.get("/projects/{project}/services/{service}/versions", response_model=list[VersionPublic])
async def read_versions(
    project: str,
    service: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    pages: PagesDep,
    q: SearchQuery = None,
) -> list[Version]:
    """The service's versions, newest first: one per commit whose pipeline succeeded (``q``: name or ref)."""
    user.require_project_read(project)
    versions = await handlers.list_versions(project, service, uow=runtime.uow)
    found = [version for version in versions if matches(q, version.name, version.ref)]
    return pages.serve(found, _newest_version_first)


@router.get("/projects/{project}/services/{service}/pipelines", response_model=list[PipelinePublic])
async def read_pipelines(
    project: str,
    service: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    pages: PagesDep,
    q: SearchQuery = None,
) -> list[PipelinePublic]:
    """The service's pipelines, newest first: status, stages with their jobs, the version each made
    or was linked to, or why a success made none (``q``: ref)."""
    user.require_project_read(project)
    pipelines = await handlers.list_pipelines(project, service, uow=runtime.uow)
    found = [pipeline for pipeline in pipelines if matches(q, pipeline.ref)]
    shown = pages.serve(found, _newest_pipeline_first)
    return await handlers.show_pipelines(shown, uow=runtime.uow)


def _newest_version_first(version: Version) -> tuple[int]:
    return (-(version.id or 0),)


def _newest_pipeline_first(pipeline: Pipeline) -> tuple[int]:
    return (-pipeline.pipeline_id,)
