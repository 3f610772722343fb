"""Catalog's HTTP API: translates requests into handler calls."""

from __future__ import annotations

from fastapi import APIRouter

from services.catalog import handlers, lifecycle
from services.catalog.models import (
    CodeCheck,
    Project,
    ProjectCreate,
    ProjectPublic,
    Service,
    ServiceCreate,
    ServicePublic,
    ServiceTypePublic,
    ServiceUpdate,
)
from services.catalog.scm import ScmDep
from services.catalog.service_types import SERVICE_TYPES
from shared.auth import PROJECT_ROLES
from shared.paging import PagesDep, SearchQuery, matches
from shared.service import CorrelationId, CurrentUser, RuntimeDep

router = APIRouter(tags=["catalog"])
WRITERS = ("project-owner", "source-code-admin")


@router.post("/projects", status_code=201, response_model=ProjectPublic)
async def create_project(data: ProjectCreate, user: CurrentUser, runtime: RuntimeDep) -> Project:
    """Create a project (organization admin)."""
    user.require_org()
    return await handlers.create_project(data, by=user.user, uow=runtime.uow)


@router.get("/projects", response_model=list[ProjectPublic])
async def read_projects(
    user: CurrentUser, runtime: RuntimeDep, pages: PagesDep, q: SearchQuery = None
) -> list[Project]:
    """List the projects the caller can see (organization roles: all), searched by code and name."""
    projects = await handlers.list_projects(uow=runtime.uow)
    seen = [p for p in projects if user.can_read_project(p.code) and matches(q, p.code, p.name)]
    return pages.serve(seen, lambda p: (p.code,))


@router.delete("/projects/{project}", status_code=204)
async def delete_project(project: str, user: CurrentUser, runtime: RuntimeDep, cid: CorrelationId) -> None:
    """Delete a project that has no services left (organization admin)."""
    user.require_org()
    await lifecycle.delete_project(project, correlation_id=cid, uow=runtime.uow)


@router.get("/service-types", response_model=list[ServiceTypePublic])
async def read_service_types(_user: CurrentUser) -> list[ServiceTypePublic]:
    """The service types a service can be created from (each with a repository template)."""
    return [ServiceTypePublic(code=t.code, name=t.name, description=t.description) for t in SERVICE_TYPES.values()]


@router.post("/projects/{project}/services", status_code=201, response_model=ServicePublic)
async def create_service(
    project: str, data: ServiceCreate, user: CurrentUser, runtime: RuntimeDep, cid: CorrelationId, scm: ScmDep
) -> Service:
    """Create a service and its repository from the service type's template."""
    user.require_project(project, *WRITERS)
    return await handlers.create_service(
        project,
        data,
        by=user.user,
        correlation_id=cid,
        uow=runtime.uow,
        scm=scm,
        secret=runtime.secret,
        hook_url=runtime.settings.hook_url,
    )


@router.get("/projects/{project}/services", response_model=list[ServicePublic])
async def read_services(
    project: str,
    user: CurrentUser,
    runtime: RuntimeDep,
    pages: PagesDep,
    q: SearchQuery = None,
) -> list[Service]:
    """List a project's services, searched by code, name and group."""
    user.require_project_read(project)
    services = await handlers.list_services(project, uow=runtime.uow)
    found = [s for s in services if matches(q, s.code, s.name, s.group)]
    return pages.serve(found, lambda s: (s.code,))


@router.get("/projects/{project}/service-codes/{code}", response_model=CodeCheck)
async def check_service_code(project: str, code: str, user: CurrentUser, runtime: RuntimeDep) -> CodeCheck:
    """Tell whether a service code is valid and still free in the project."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.check_code(project, code, uow=runtime.uow)


@router.get("/projects/{project}/services/{service}", response_model=ServicePublic)
async def read_service(project: str, service: str, user: CurrentUser, runtime: RuntimeDep) -> Service:
    """One service, with its repository address."""
    user.require_project_read(project)
    return await handlers.get_service(project, service, uow=runtime.uow)


@router.patch("/projects/{project}/services/{service}", response_model=ServicePublic)
async def update_service(
    project: str, service: str, data: ServiceUpdate, user: CurrentUser, runtime: RuntimeDep, cid: CorrelationId
) -> Service:
    """Rename, disable or enable a service (a disabled one is neither released nor deployed)."""
    user.require_project(project, *WRITERS)
    return await lifecycle.update_service(project, service, data, correlation_id=cid, uow=runtime.uow)


@router.delete("/projects/{project}/services/{service}", status_code=204)
async def delete_service(
    project: str, service: str, user: CurrentUser, runtime: RuntimeDep, cid: CorrelationId, scm: ScmDep
) -> None:
    """Delete a disabled service that runs nowhere; its repository is archived, not deleted."""
    user.require_project(project, *WRITERS)
    await lifecycle.delete_service(project, service, correlation_id=cid, uow=runtime.uow, scm=scm)
