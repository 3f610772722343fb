"""Release's HTTP API: translates requests into handler calls."""

from __future__ import annotations

from fastapi import APIRouter

from services.release import environments, handlers
from services.release.models import (
    AutoReleaseUpdate,
    Environment,
    EnvironmentCreate,
    EnvironmentPublic,
    EnvironmentUpdate,
    Release,
    ReleaseCreate,
    ReleasePublic,
    ReleaseStarted,
    ServiceReleases,
    VersionReleaseCreate,
)
from shared.api_docs import links_to
from shared.auth import PROJECT_ROLES
from shared.errors import BadRequest
from shared.paging import PageRequest, PagesDep, SearchQuery, matches
from shared.service import CorrelationId, CurrentUser, RuntimeDep

router = APIRouter(tags=["release"])
SERVICE = "/projects/{project}/services/{service}"


@router.post(
    "/environments",
    status_code=201,
    response_model=EnvironmentPublic,
    responses=links_to(201, "environment", "code", "readEnvironment", "updateEnvironment", "deleteEnvironment"),
)
async def create_environment(
    data: EnvironmentCreate, user: CurrentUser, runtime: RuntimeDep, cid: CorrelationId
) -> Environment:
    """Create an environment (organization admin)."""
    user.require_org()
    return await environments.create_environment(data, by=user.user, uow=runtime.uow, correlation_id=cid)


@router.get("/environments", response_model=list[EnvironmentPublic])
async def read_environments(
    _user: CurrentUser, runtime: RuntimeDep, pages: PagesDep, q: SearchQuery = None
) -> list[Environment]:
    """List the organization's environments, by code (``q`` searches codes and names)."""
    found = [e for e in await environments.list_environments(uow=runtime.uow) if matches(q, e.code, e.name)]
    return pages.serve(found, lambda e: (e.code,))


@router.get("/environments/{environment}", response_model=EnvironmentPublic)
async def read_environment(environment: str, _user: CurrentUser, runtime: RuntimeDep) -> Environment:
    """One environment."""
    return await environments.get_environment(environment, uow=runtime.uow)


@router.patch("/environments/{environment}", response_model=EnvironmentPublic)
async def update_environment(
    environment: str, data: EnvironmentUpdate, user: CurrentUser, runtime: RuntimeDep, cid: CorrelationId
) -> Environment:
    """Rename an environment or change its Ingress settings (organization admin)."""
    user.require_org()
    return await environments.update_environment(environment, data, uow=runtime.uow, correlation_id=cid)


@router.delete("/environments/{environment}", status_code=204)
async def delete_environment(environment: str, user: CurrentUser, runtime: RuntimeDep, cid: CorrelationId) -> None:
    """Delete an environment nothing is released to or runs in (organization admin)."""
    user.require_org()
    await environments.delete_environment(environment, uow=runtime.uow, correlation_id=cid)


@router.post(f"{SERVICE}/releases", status_code=201, response_model=ReleaseStarted)
async def create_release(
    project: str,
    service: str,
    data: ReleaseCreate,
    user: CurrentUser,
    runtime: RuntimeDep,
    cid: CorrelationId,
) -> ReleaseStarted:
    """Release a service to an environment; says which version went there at once, or why none did."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.release_service(
        project, service, data.environment, by=user.user, correlation_id=cid, uow=runtime.uow
    )


@router.get(f"{SERVICE}/releases", response_model=ServiceReleases)
async def read_releases(project: str, service: str, user: CurrentUser, runtime: RuntimeDep) -> ServiceReleases:
    """The environments a service is released to, with the latest version in each."""
    user.require_project_read(project)
    return await handlers.list_releases(project, service, uow=runtime.uow)


@router.delete(f"{SERVICE}/releases/{{environment}}", status_code=204)
async def delete_release(
    project: str, service: str, environment: str, user: CurrentUser, runtime: RuntimeDep, cid: CorrelationId
) -> None:
    """Un-release a service from an environment it does not run in (announced as release.withdrawn)."""
    user.require_project(project, *PROJECT_ROLES)
    await handlers.withdraw_release(project, service, environment, by=user.user, correlation_id=cid, uow=runtime.uow)


@router.put(f"{SERVICE}/auto-release", response_model=ServiceReleases)
async def update_auto_release(
    project: str, service: str, body: AutoReleaseUpdate, user: CurrentUser, runtime: RuntimeDep
) -> ServiceReleases:
    """Set auto-release: new versions from matching refs go to every environment released to."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.set_auto_release(
        project, service, body.enabled, refs=body.refs, tags=body.tags, uow=runtime.uow
    )


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
    project: str,
    service: str,
    environment: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    pages: PagesDep,
) -> list[Release]:
    """Release history of a service in one environment, newest first, with deployment files."""
    user.require_project_read(project)
    releases = await handlers.list_release_history(
        project, service, environment, limit=pages.limit + 1, before_id=_before_id(pages.page), uow=runtime.uow
    )
    return pages.served(releases, lambda release: (release.id,))


def _before_id(page: PageRequest) -> int | None:
    """The history pages by release id, newest first: the cursor is the last id served."""
    if page.after is None:
        return None
    if len(page.after) != 1 or not isinstance(page.after[0], int):
        raise BadRequest(
            "the cursor is not one this list gave: take it from the Link header, or start again without it"
        )
    return page.after[0]
