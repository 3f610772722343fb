"""Catalog's use cases: each one transaction, outgoing events through the outbox."""

from __future__ import annotations

import asyncio
import uuid
from functools import partial

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from services.catalog import domain
from services.catalog.models import (
    CodeCheck,
    Project,
    ProjectCreate,
    Service,
    ServiceCreate,
)
from services.catalog.scm import (
    GroupNotFound,
    InvalidRepositorySpec,
    Repository,
    RepositoryExists,
    RepoSpec,
    Scm,
    ScmError,
)
from services.catalog.service_types import SERVICE_TYPES
from shared.auth import webhook_secret
from shared.errors import Conflict, InvalidInput, NotFound, UpstreamUnavailable
from shared.events import ServiceCreated
from shared.logging import get_logger
from shared.naming import dns1123_name, workload_name
from shared.outbox import UnitOfWork, emit

log = get_logger(__name__)
SCM_TIMEOUT_SECONDS = 60


async def create_project(data: ProjectCreate, *, by: str, uow: UnitOfWork) -> Project:
    domain.validate_project_code(data.code)
    domain.validate_name(data.name, "project name")
    domain.validate_service_group(data.gitlab_group)
    async with uow.begin() as session:
        if await session.get(Project, data.code) is not None:
            raise Conflict(f"project {data.code!r} already exists")
        project = Project.model_validate(data, update={"created_by": by})
        session.add(project)
    return project


async def get_project(code: str, *, uow: UnitOfWork) -> Project:
    async with uow.sessions() as session:
        project = await session.get(Project, code)
    if project is None:
        raise NotFound(f"project {code!r} does not exist: create it with POST /api/catalog/projects")
    return project


async def list_projects(*, uow: UnitOfWork) -> list[Project]:
    async with uow.sessions() as session:
        return list((await session.exec(select(Project).order_by(col(Project.code)))).all())


async def check_code(project: str, code: str, *, uow: UnitOfWork) -> CodeCheck:
    try:
        domain.validate_service_code(code)
    except InvalidInput as exc:
        return CodeCheck(code=code, available=False, reason=exc.detail)
    clash = await _find_clash(project, code, uow=uow)
    return CodeCheck(code=code, available=clash is None, reason=clash)


async def _find_clash(project: str, code: str, *, uow: UnitOfWork) -> str | None:
    """Why ``code`` cannot be used in ``project``, or None (the rule: ``domain.clash``)."""
    slug, workload = dns1123_name(code), workload_name(project, code)
    async with uow.sessions() as session:
        rows = await session.exec(
            select(Service).where(
                ((Service.project == project) & ((Service.code == code) | (Service.slug == slug)))
                | (Service.workload == workload)
            )
        )
        existing = rows.first()
    return domain.clash(project, code, existing)


async def create_service(
    project_code: str,
    data: ServiceCreate,
    *,
    by: str,
    correlation_id: str,
    uow: UnitOfWork,
    scm: Scm,
    secret: str,
    hook_url: str,
) -> Service:
    """Validate, create the repository from the type's template, then record and announce it."""
    project = await get_project(project_code, uow=uow)
    domain.validate_service_code(data.code)
    domain.validate_service_group(data.group)
    domain.validate_name(data.name)
    if data.type not in SERVICE_TYPES:
        raise InvalidInput(f"unknown service type {data.type!r}: choose one of {', '.join(SERVICE_TYPES)}")
    if (clash := await _find_clash(project.code, data.code, uow=uow)) is not None:
        raise Conflict(clash)
    service_id = uuid.uuid4().hex
    spec = RepoSpec(
        project=project.code,
        group=project.gitlab_group,
        code=data.code,
        name=data.name,
        type=data.type,
        hook_url=hook_url,
        hook_token=partial(webhook_secret, secret),
    )
    repository = await _create_repository(scm, spec)
    service = Service.model_validate(
        data,
        update={
            "id": service_id,
            "project": project.code,
            "slug": dns1123_name(data.code),
            "workload": workload_name(project.code, data.code),
            "repository_url": repository.url,
            "repository_web_url": repository.web_url,
            "repository_path": repository.path_with_namespace,
            "scm_project_id": repository.scm_project_id,
            "created_by": by,
        },
    )
    created = ServiceCreated(
        service_id=service_id,
        project=project.code,
        service=data.code,
        name=service.name,
        group=service.group,
        type=service.type,
        repository_url=repository.url,
        repository_web_url=repository.web_url,
        repository_path=repository.path_with_namespace,
        scm_project_id=repository.scm_project_id,
    )
    try:
        async with uow.begin() as session:
            session.add(service)
            emit(session, created, correlation_id=correlation_id)
    except IntegrityError as exc:
        raise Conflict(
            f"service {data.code!r} was created concurrently in project {project.code!r}; "
            f"the repository {repository.web_url} was made for this request and can be deleted"
        ) from exc
    log.info("service created", project=project.code, code=data.code, repository=repository.web_url)
    return service


async def _create_repository(scm: Scm, spec: RepoSpec) -> Repository:
    try:
        return await asyncio.wait_for(asyncio.to_thread(scm.create_repository, spec), SCM_TIMEOUT_SECONDS)
    except RepositoryExists as exc:
        raise Conflict(exc.detail) from exc
    except (GroupNotFound, InvalidRepositorySpec) as exc:
        raise InvalidInput(exc.detail) from exc
    except ScmError as exc:
        raise UpstreamUnavailable(exc.detail) from exc
    except TimeoutError as exc:
        raise UpstreamUnavailable(
            f"the repository host did not answer within {SCM_TIMEOUT_SECONDS}s and nothing was recorded; "
            f"the repository {spec.group}/{spec.code} may still appear there: check it, delete it if so, "
            "and try again"
        ) from exc


async def list_services(project: str, *, uow: UnitOfWork) -> list[Service]:
    await get_project(project, uow=uow)
    async with uow.sessions() as session:
        rows = await session.exec(select(Service).where(Service.project == project).order_by(col(Service.code)))
        return list(rows.all())


async def get_service(project: str, code: str, *, uow: UnitOfWork) -> Service:
    async with uow.sessions() as session:
        rows = await session.exec(select(Service).where(Service.project == project).where(Service.code == code))
        service = rows.first()
    if service is None:
        raise NotFound(f"service {code!r} does not exist in project {project!r}")
    return service
