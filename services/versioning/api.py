"""Versioning's HTTP API: GitLab's webhook, versions and pipelines of a service."""
from __future__ import annotations

import json

from fastapi import APIRouter, Header, Request, Response

from services.versioning import handlers
from services.versioning.models import HookReceipt, PipelinePublic, VersionPublic
from shared.auth import PROJECT_ROLES
from shared.errors import InvalidInput
from shared.service import CorrelationId, CurrentUser, RuntimeDep

router = APIRouter(tags=["versioning"])
PIPELINE_HOOK = "Pipeline Hook"


@router.post("/webhooks/gitlab", response_model=HookReceipt)
async def receive_gitlab_hook(
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    cid: CorrelationId,
    x_gitlab_event: str | None = Header(default=None),
    x_gitlab_token: str | None = Header(default=None),
    x_gitlab_event_uuid: str | None = Header(default=None),
    idempotency_key: str | None = Header(default=None),
):
    """GitLab's webhook: Pipeline Hooks become pipelines, and successful ones versions."""
    if x_gitlab_event != PIPELINE_HOOK:
        return HookReceipt(accepted=False, detail=f"{x_gitlab_event or 'no event'} ignored: only Pipeline Hook is read")
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidInput(f"the hook body is not JSON: {exc}") from exc
    receipt = await handlers.receive_pipeline_hook(
        body,
        token=x_gitlab_token,
        delivery_id=idempotency_key or x_gitlab_event_uuid or cid,
        uow=runtime.uow,
        secret=runtime.secret,
    )
    if receipt.parked:
        response.status_code = 202  # kept until its service is known
    return receipt


@router.get("/projects/{project}/services/{service}/versions", response_model=list[VersionPublic])
async def read_versions(project: str, service: str, user: CurrentUser, runtime: RuntimeDep):
    """The service's versions, newest first: one per successful pipeline."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.list_versions(project, service, uow=runtime.uow)


@router.get("/projects/{project}/services/{service}/pipelines", response_model=list[PipelinePublic])
async def read_pipelines(project: str, service: str, user: CurrentUser, runtime: RuntimeDep):
    """The service's pipelines with their latest status, newest first."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.list_pipelines(project, service, uow=runtime.uow)
