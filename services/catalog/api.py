"""Catalog's HTTP API: translates requests into handler calls."""

from __future__ import annotations

from fastapi import APIRouter

from services.catalog import handlers
from services.catalog.models import (
    CodeCheck,
    Project,
    ProjectCreate,
    ProjectPublic,
    Service,
    ServiceCreate,
    ServicePublic,
    ServiceTypePublic,
)
from services.catalog.scm import SERVICE_TYPES, ScmDep
from shared.auth import PROJECT_ROLES
from shared.service import CorrelationId, CurrentUser, RuntimeDep

router = APIRouter(tags=["catalog"])
WRITERS = ("project-owner", "source-code-admin")


@router.post("/projects", status_code=201, response_model=ProjectPublic)
async def create_project(data: ProjectCreate, user: CurrentUser, runtime: RuntimeDep) -> Project:
    """Create a project (organization admin)."""
    user.require_org()
    return await handlers.create_project(data, by=user.user, uow=runtime.uow)


@router.get("/projects", response_model=list[ProjectPublic])
async def read_projects(user: CurrentUser, runtime: RuntimeDep) -> list[Project]:
    """List the projects the caller can see."""
    projects = await handlers.list_projects(uow=runtime.uow)
    if user.is_org_admin():
        return projects
    return [p for p in projects if any(r.startswith(f"{p.code}:") for r in user.roles)]


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
async def read_services(project: str, user: CurrentUser, runtime: RuntimeDep) -> list[Service]:
    """List a project's services."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.list_services(project, uow=runtime.uow)


@router.get("/projects/{project}/service-codes/{code}", response_model=CodeCheck)
async def check_service_code(project: str, code: str, user: CurrentUser, runtime: RuntimeDep) -> CodeCheck:
    """Tell whether a service code is valid and still free in the project."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.check_code(project, code, uow=runtime.uow)


@router.get("/projects/{project}/services/{service}", response_model=ServicePublic)
async def read_service(project: str, service: str, user: CurrentUser, runtime: RuntimeDep) -> Service:
    """One service, with its repository address."""
    user.require_project(project, *PROJECT_ROLES)
    return await handlers.get_service(project, service, uow=runtime.uow)
