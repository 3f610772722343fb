"""Deploy's HTTP API (organization level, role deploy-admin): translates requests into handlers.

The gateway forwards ``/api/deploy/…`` here; paths start at ``/environments``, ``/deployments``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header

from services.deploy import handlers, history, undeploy, views
from services.deploy.cluster import ClusterDep
from services.deploy.handlers import Action
from services.deploy.models import (
    AutoDeployPublic,
    AutoDeployUpdate,
    Deployment,
    DeploymentCreate,
    DeploymentPublic,
    ReplicasUpdate,
    RollbackRequest,
    RunningState,
)
from services.deploy.resend import Fingerprint
from shared.paging import PagesDep
from shared.service import CorrelationId, CurrentUser, RuntimeDep

router = APIRouter(tags=["deploy"])
IdempotencyKey = Annotated[
    str | None, Header(max_length=200, description="resend-safe: the same key returns the same deployment")
]
SERVICE = "/environments/{environment}/projects/{project}/services/{service}"
DEPLOY_ADMIN = "deploy-admin"


def request_key(user: str, idempotency_key: str | None) -> str | None:
    """Keys are per user: two people's keys never meet."""
    return f"{user}:{idempotency_key}" if idempotency_key else None


async def acting(
    environment: str,
    project: str,
    service: str,
    user: CurrentUser,
    cid: CorrelationId,
    fingerprint: Fingerprint,
    idempotency_key: IdempotencyKey = None,
) -> Action:
    """A deploy admin's action on the service of the path (the role is checked here)."""
    user.require_org(DEPLOY_ADMIN)
    key = request_key(user.user, idempotency_key)
    return Action(project, service, environment, user.user, cid, key, fingerprint)


ActionDep = Annotated[Action, Depends(acting)]


@router.post(
    "/deployments",
    status_code=202,
    response_model=DeploymentPublic,
    responses={404: {"description": "the service, environment, version or a resource named does not exist"}},
)
async def create_deployment(
    data: DeploymentCreate,
    user: CurrentUser,
    runtime: RuntimeDep,
    cid: CorrelationId,
    fingerprint: Fingerprint,
    idempotency_key: IdempotencyKey = None,
) -> Deployment:
    """Deploy a released version (or "latest": the answer names it); the worker applies it and
    reports deploy.status."""
    user.require_org(DEPLOY_ADMIN)
    return await handlers.request_deployment(
        data,
        by=user.user,
        correlation_id=cid,
        uow=runtime.uow,
        request_key=request_key(user.user, idempotency_key),
        request_fingerprint=fingerprint,
    )


@router.get("/deployments/{deployment_id}", response_model=DeploymentPublic)
async def read_deployment(deployment_id: str, user: CurrentUser, runtime: RuntimeDep) -> Deployment:
    """One deployment (the id a deploy action answered with): its state, counts and message."""
    return await history.read_deployment(deployment_id, user, uow=runtime.uow)


@router.get(SERVICE, response_model=RunningState)
async def read_running_state(
    environment: str, project: str, service: str, user: CurrentUser, runtime: RuntimeDep, cluster: ClusterDep
) -> RunningState:
    """Running and deploying versions with desired / current / available counts."""
    user.require_project_read(project)
    return await views.running_state(project, service, environment, uow=runtime.uow, driver=cluster)


@router.put(f"{SERVICE}/replicas", status_code=202, response_model=DeploymentPublic)
async def update_replicas(body: ReplicasUpdate, act: ActionDep, runtime: RuntimeDep) -> Deployment:
    """Change the desired pod count (1 or more) of the stable track."""
    return await handlers.scale(act, body.replicas, uow=runtime.uow)


@router.post(f"{SERVICE}/rollback", status_code=202, response_model=DeploymentPublic)
async def rollback(act: ActionDep, runtime: RuntimeDep, body: RollbackRequest | None = None) -> Deployment:
    """Deploy an earlier version (default: the one deployed before the current one)."""
    version = body.version if body else None
    return await handlers.rollback(act, version, uow=runtime.uow)


@router.post(f"{SERVICE}/canary/promote", status_code=202, response_model=DeploymentPublic)
async def promote_canary(act: ActionDep, runtime: RuntimeDep) -> Deployment:
    """Make the canary's version the stable one and remove the canary track."""
    return await handlers.promote_canary(act, uow=runtime.uow)


@router.post(f"{SERVICE}/canary/abort", status_code=202, response_model=DeploymentPublic)
async def abort_canary(act: ActionDep, runtime: RuntimeDep) -> Deployment:
    """Remove the canary track; the stable version keeps serving."""
    return await handlers.abort_canary(act, uow=runtime.uow)


@router.delete(SERVICE, status_code=202, response_model=DeploymentPublic)
async def undeploy_service(act: ActionDep, runtime: RuntimeDep) -> Deployment:
    """Undeploy: remove the service's workload (both tracks, its Service and Ingress) from the
    environment's cluster; deploy.status says "removed" once it is gone."""
    return await undeploy.undeploy(act, uow=runtime.uow)


@router.put(f"{SERVICE}/auto-deploy", response_model=AutoDeployPublic)
async def update_auto_deploy(
    environment: str,
    project: str,
    service: str,
    body: AutoDeployUpdate,
    user: CurrentUser,
    runtime: RuntimeDep,
) -> AutoDeployPublic:
    """Turn auto-deploy of released versions on or off (after a first manual deployment)."""
    user.require_org(DEPLOY_ADMIN)
    rule = await handlers.set_auto_deploy(project, service, environment, body.enabled, by=user.user, uow=runtime.uow)
    return AutoDeployPublic(
        project=project,
        service=service,
        environment=environment,
        enabled=rule.enabled,
        updated_by=rule.updated_by,
        updated_at=rule.updated_at,
    )


@router.get(f"{SERVICE}/deployments", response_model=list[DeploymentPublic])
async def read_deployments(
    environment: str,
    project: str,
    service: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    pages: PagesDep,
) -> list[Deployment]:
    """The deployment history, newest first, with who or what triggered each one (paged)."""
    user.require_project_read(project)
    return await history.page_of_deployments(project, service, environment, pages, uow=runtime.uow)
