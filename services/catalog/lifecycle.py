"""A service's and a project's life after creation: renamed, disabled, enabled, deleted.

Each change is one transaction with its event (``service.changed``, ``project.changed``), so the
other services follow. Deleting a service archives its repository first, outside the transaction:
when the repository host fails, nothing was changed.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.catalog import domain
from services.catalog.handlers import SCM_TIMEOUT_SECONDS, get_service
from services.catalog.models import Project, Service, ServiceUpdate
from services.catalog.running import environments_running, service_lock
from services.catalog.scm import Repository, Scm, ScmError
from shared.db import serialize_on
from shared.errors import NotFound, UpstreamUnavailable
from shared.events import ProjectChanged, ServiceChanged
from shared.logging import get_logger
from shared.outbox import UnitOfWork, emit

log = get_logger(__name__)


async def update_service(
    project: str, code: str, data: ServiceUpdate, *, correlation_id: str, uow: UnitOfWork
) -> Service:
    """Rename, disable or enable a service; each change made is announced, in order."""
    async with uow.begin() as session:
        service = await _locked_service(session, project, code)
        changes = domain.service_changes(service.name, service.enabled, new_name=data.name, new_enabled=data.enabled)
        for step in changes:
            service.name, service.enabled = step.name, step.enabled
            emit(session, _changed(service, step.change), correlation_id=correlation_id)
        session.add(service)
    log.info("service changed", project=project, code=code, changes=[c.change for c in changes])
    return service


async def delete_service(project: str, code: str, *, correlation_id: str, uow: UnitOfWork, scm: Scm) -> None:
    """Delete a disabled service that runs nowhere: archive its repository, then forget it (its
    code is free again) and announce it."""
    service = await get_service(project, code, uow=uow)
    async with uow.sessions() as session:
        _deletable(service, await environments_running(session, service.id))
    archived = await _archive(scm, service)
    async with uow.begin() as session:
        service = await _locked_service(session, project, code)
        # checked again: it could have been enabled or deployed while the repository was archived
        _deletable(service, await environments_running(session, service.id))
        await session.delete(service)
        emit(session, _changed(service, "deleted"), correlation_id=correlation_id)
    log.info("service deleted", project=project, code=code, repository=service.repository_web_url, archived=archived)


async def delete_project(project: str, *, correlation_id: str, uow: UnitOfWork) -> None:
    """Delete an empty project and announce it."""
    async with uow.begin() as session:
        found = await session.get(Project, project)
        if found is None:
            raise NotFound(f"project {project!r} does not exist")
        query = select(func.count()).select_from(Service).where(Service.project == project)
        domain.require_empty_project(project, int((await session.exec(query)).one()))
        await session.delete(found)
        emit(session, ProjectChanged(project=project, change="deleted"), correlation_id=correlation_id)
    log.info("project deleted", project=project)


async def _locked_service(session: AsyncSession, project: str, code: str) -> Service:
    rows = await session.exec(select(Service).where(Service.project == project, Service.code == code))
    service = rows.first()
    if service is None:
        raise NotFound(f"service {code!r} does not exist in project {project!r}")
    await serialize_on(session, service_lock(service.id))
    await session.refresh(service)
    return service


def _deletable(service: Service, running_in: list[str]) -> None:
    domain.require_disabled(service.project, service.code, service.enabled)
    domain.require_running_nowhere(service.project, service.code, running_in)


async def _archive(scm: Scm, service: Service) -> bool:
    repository = Repository(
        url=service.repository_url,
        web_url=service.repository_web_url,
        path_with_namespace=service.repository_path,
        scm_project_id=service.scm_project_id,
    )
    try:
        return await asyncio.wait_for(asyncio.to_thread(scm.archive, repository), SCM_TIMEOUT_SECONDS)
    except ScmError as exc:
        raise UpstreamUnavailable(
            f"the repository {service.repository_path} could not be archived, so service {service.code!r} "
            f"was not deleted: {exc.detail}"
        ) from exc
    except TimeoutError as exc:
        raise UpstreamUnavailable(
            f"the repository host did not answer within {SCM_TIMEOUT_SECONDS}s, so service {service.code!r} "
            f"was not deleted; the repository {service.repository_path} may be archived already: try again"
        ) from exc


def _changed(service: Service, change: Literal["updated", "disabled", "enabled", "deleted"]) -> ServiceChanged:
    return ServiceChanged(
        service_id=service.id,
        project=service.project,
        service=service.code,
        name=service.name,
        enabled=service.enabled,
        change=change,
    )
