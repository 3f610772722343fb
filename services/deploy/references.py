"""What a deployment request names, checked before anything is written: the environment exists,
the version is released there (``"latest"``: the one released last)."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.deploy import domain, lookups
from services.deploy.environments import find_environment
from services.deploy.models import ReleasedVersion


async def require_environment(session: AsyncSession, environment: str) -> None:
    """An announced environment, or one that versions were released to before environments were
    announced (an install older than ``environment.changed``)."""
    announced = await find_environment(session, environment) is not None
    released_there = False
    if not announced:
        rows = await session.exec(select(ReleasedVersion.id).where(ReleasedVersion.environment == environment).limit(1))
        released_there = rows.first() is not None
    domain.require_known_environment(environment, announced=announced, released_there=released_there)


async def newest_released(session: AsyncSession, project: str, service: str, environment: str) -> str | None:
    """The version most recently released to the environment (withdrawn ones are not released)."""
    rows = await session.exec(
        select(ReleasedVersion.version)
        .where(ReleasedVersion.project == project, ReleasedVersion.service == service)
        .where(ReleasedVersion.environment == environment, col(ReleasedVersion.withdrawn_at).is_(None))
        .order_by(col(ReleasedVersion.released_at).desc(), col(ReleasedVersion.id).desc())
        .limit(1)
    )
    return rows.first()


async def release_to_deploy(
    session: AsyncSession, project: str, service: str, environment: str, version: str
) -> ReleasedVersion:
    """The release a deployment request names: a version, or ``"latest"``, released to an existing environment."""
    await require_environment(session, environment)
    if version == domain.LATEST:
        newest = await newest_released(session, project, service, environment)
        version = domain.resolve_version(version, newest, domain.subject(project, service), environment)
    return await lookups.released(session, project, service, environment, version)
