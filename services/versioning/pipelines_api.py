"""Pipelines across services: what failed lately (the state board's panel), for the projects a user reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import col, select

from services.versioning import pipelines
from services.versioning.models import KnownService, Pipeline, PipelinePublic
from shared.paging import PagesDep
from shared.service import CurrentUser, RuntimeDep

router = APIRouter(tags=["versioning"])
StatusQuery = Annotated[
    str | None, Query(max_length=32, pattern="^[a-z_]+$", description="GitLab's status, e.g. failed")
]


class ServicePipelinePublic(PipelinePublic):
    project: str
    service: str


@router.get("/pipelines", response_model=list[ServicePipelinePublic])
async def read_all_pipelines(
    user: CurrentUser, runtime: RuntimeDep, pages: PagesDep, status: StatusQuery = None
) -> list[ServicePipelinePublic]:
    """Every service's pipelines the user may read, last changed first (``status=failed``: the failed ones)."""
    async with runtime.uow.sessions() as session:
        query = select(Pipeline, KnownService).where(col(Pipeline.service_id) == col(KnownService.service_id))
        if status:
            query = query.where(col(Pipeline.status) == status)
        rows = [(p, s) for p, s in (await session.exec(query)).all() if user.can_read_project(s.project)]
        shown = pages.serve(rows, lambda row: (-row[0].updated_at.timestamp(), row[0].service_id, row[0].pipeline_id))
        views = await pipelines.views(session, [pipeline for pipeline, _ in shown])
    return [
        ServicePipelinePublic(**view.model_dump(), project=service.project, service=service.code)
        for view, (_, service) in zip(views, shown, strict=True)
    ]
