"""Deployments as a client reads them: one by its id, and a service's history a page at a time
(newest first; the cursor is the last served deployment's time and id, so pages never overlap)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.deploy import lookups
from services.deploy.models import Deployment
from shared.auth import Principal
from shared.errors import BadRequest, NotFound
from shared.outbox import UnitOfWork
from shared.paging import Pages


async def read_deployment(deployment_id: str, user: Principal, *, uow: UnitOfWork) -> Deployment:
    """Anyone who may read the deployment's project (deploy admins read every project)."""
    async with uow.sessions() as session:
        found = await session.get(Deployment, deployment_id)
    if found is None:
        raise NotFound(
            f"no deployment {deployment_id!r}: use the id a deploy action answered with, or find it in "
            "GET /api/deploy/environments/{environment}/projects/{project}/services/{service}/deployments"
        )
    user.require_project_read(found.project)
    return found


async def page_of_deployments(
    project: str,
    service: str,
    environment: str,
    pages: Pages,
    *,
    uow: UnitOfWork,
) -> list[Deployment]:
    """One page of the service's deployments to the environment, newest first; Link to the next."""
    async with uow.sessions() as session:
        release = await lookups.service_in(session, project, service, environment)
        rows = await newest_first(session, release.service_id, environment, limit=pages.limit + 1, after=pages.after)
    return pages.served(rows, _key)


async def newest_first(
    session: AsyncSession,
    service_id: str,
    environment: str,
    *,
    limit: int,
    after: tuple[object, ...] | None = None,
) -> list[Deployment]:
    """Deployments of the service to the environment, newest first, from after ``after`` (a key)."""
    query = (
        select(Deployment)
        .where(Deployment.service_id == service_id, Deployment.environment == environment)
        .order_by(col(Deployment.created_at).desc(), col(Deployment.id).desc())
        .limit(limit)
    )
    if after is not None:
        at, last_id = _decoded(after)
        created = col(Deployment.created_at)
        query = query.where(or_(created < at, and_(created == at, col(Deployment.id) < last_id)))
    return list((await session.exec(query)).all())


def _key(deployment: Deployment) -> tuple[str, str]:
    return (deployment.created_at.isoformat(), deployment.id)


def _decoded(after: tuple[object, ...]) -> tuple[datetime, str]:
    try:
        at, last_id = after
        when = datetime.fromisoformat(str(at))
    except ValueError as exc:
        raise BadRequest("the cursor is not one this list gave: take it from the Link header") from exc
    if when.tzinfo is None or not isinstance(last_id, str):
        raise BadRequest("the cursor is not one this list gave: take it from the Link header")
    return when, last_id
