"""Release's HTTP API: translates requests into handler calls."""

from __future__ import annotations

from fastapi import APIRouter

from services.release import handlers
from services.release.models import (
    Environment,
    EnvironmentCreate,
    EnvironmentPublic,
    Release,
    ReleaseCreate,
    ReleasePublic,
    ReleaseTarget,
    ServiceReleases,
    VersionReleaseCreate,
)
from shared.auth import PROJECT_ROLES, Principal
from shared.schemas import Toggle
from shared.service import CorrelationId, CurrentUser, RuntimeDep

router = APIRouter(tags=["release"])
SERVICE = "/projects/{project}/services/{service}"


def _require_reader(user: Principal, project: str) -> None:
    """Project roles read a project's releases; a deploy admin picks released versions from them."""
    if "deploy-admin" not in user.roles:
        user.require_project(project, *PROJECT_ROLES)


@router.post("/environments", status_code=201, response_model=EnvironmentPublic)
async def create_environment(data: EnvironmentCreate, user: CurrentUser, runtime: RuntimeDep) -> Environment:
    """Create an environment (organization admin)."""
    user.require_org()
    return await handlers.create_environment(data, by=user.user, uow=runtime.uow)


@router.get("/environments", response_model=list[EnvironmentPublic])
async def read_environments(_user: CurrentUser, runtime: RuntimeDep) -> list[Environment]:
    """List the organization's environments."""
    return await handlers.list_environments(uow=runtime.uow)


@router.get("/environments/{environment}", response_model=EnvironmentPublic)
async def read_environment(environment: str, _user: CurrentUser, runtime: RuntimeDep) -> Environment:
    """One environment."""
    return await handlers.get_environment(environment, uow=runtime.uow)


@router.post(f"{SERVICE}/releases", status_code=201, response_model=ReleaseTarget)
async def create_release(
    project: str,
    service: str,
    data: ReleaseCreate,
    user: CurrentUser,
    runtime: RuntimeDep,
    cid: CorrelationId,
) -> ReleaseTarget:
    """Release a service to an environment (its newest version goes there at once)."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.release_service(
        project, service, data.environment, by=user.user, correlation_id=cid, uow=runtime.uow
    )


@router.get(f"{SERVICE}/releases", response_model=ServiceReleases)
async def read_releases(project: str, service: str, user: CurrentUser, runtime: RuntimeDep) -> ServiceReleases:
    """The environments a service is released to, with the latest version in each."""
    _require_reader(user, project)
    return await handlers.list_releases(project, service, uow=runtime.uow)


@router.put(f"{SERVICE}/auto-release", response_model=ServiceReleases)
async def update_auto_release(
    project: str, service: str, body: Toggle, user: CurrentUser, runtime: RuntimeDep
) -> ServiceReleases:
    """Turn auto-release on or off: new versions go to every environment released to."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.set_auto_release(project, service, body.enabled, uow=runtime.uow)


@router.post(f"{SERVICE}/releases/{{environment}}/versions", status_code=201, response_model=ReleasePublic)
async def create_version_release(
    project: str,
    service: str,
    environment: str,
    data: VersionReleaseCreate,
    user: CurrentUser,
    runtime: RuntimeDep,
    cid: CorrelationId,
) -> Release:
    """Release one version to an environment the service is released to."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.release_version(
        project,
        service,
        environment,
        data.version,
        by=user.user,
        correlation_id=cid,
        uow=runtime.uow,
    )


@router.get(f"{SERVICE}/releases/{{environment}}/versions", response_model=list[ReleasePublic])
async def read_version_releases(
    project: str, service: str, environment: str, user: CurrentUser, runtime: RuntimeDep
) -> list[Release]:
    """Release history of a service in one environment, newest first, with deployment files."""
    _require_reader(user, project)
    return await handlers.list_release_history(project, service, environment, uow=runtime.uow)
