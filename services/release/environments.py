"""Environments (organization level): create, change, delete, each announced on environment.changed.

The announcement carries an environment's full state every time, so deploy and the gateway keep
their own copy from the events alone.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.release import domain, lookups
from services.release.models import Environment, EnvironmentCreate, EnvironmentUpdate, Release
from shared.db import serialize_on
from shared.errors import Conflict
from shared.events import EnvironmentChanged, utcnow
from shared.logging import get_logger
from shared.outbox import UnitOfWork, emit

log = get_logger(__name__)


async def create_environment(
    data: EnvironmentCreate, *, by: str, uow: UnitOfWork, correlation_id: str | None = None
) -> Environment:
    code = domain.validate_environment_code(data.code)
    environment = Environment(
        code=code,
        name=domain.validate_name(data.name),
        tier=domain.validate_tier(data.tier),
        namespace=domain.namespace_for(code, data.namespace),
        ingress_class=domain.validate_ingress_class(data.ingress_class),
        ingress_host=domain.validate_ingress_host(data.ingress_host),
        created_by=by,
    )
    try:
        async with uow.begin() as session:
            if await session.get(Environment, code) is not None:
                raise Conflict(f"environment {code!r} already exists")
            query = select(Environment).where(Environment.namespace == environment.namespace)
            if (clash := (await session.exec(query)).first()) is not None:
                raise Conflict(
                    f"namespace {environment.namespace!r} is already used by environment "
                    f"{clash.code!r}: give this environment another namespace"
                )
            session.add(environment)
            _announce(session, environment, "created", correlation_id=correlation_id)
    except IntegrityError as exc:
        raise Conflict(
            f"environment {code!r} or namespace {environment.namespace!r} was just created by "
            "another request: see GET /api/release/environments"
        ) from exc
    log.info("environment created", environment=code, namespace=environment.namespace)
    return environment


async def update_environment(
    code: str, data: EnvironmentUpdate, *, uow: UnitOfWork, correlation_id: str | None = None
) -> Environment:
    """Change the name or the Ingress settings; the code, tier and namespace stay."""
    given = data.model_fields_set
    async with uow.begin() as session:
        environment = await lookups.require_environment(session, code)
        if "name" in given:
            environment.name = domain.validate_name(data.name or "")
        if "ingress_class" in given:
            environment.ingress_class = domain.validate_ingress_class(data.ingress_class)
        if "ingress_host" in given:
            environment.ingress_host = domain.validate_ingress_host(data.ingress_host)
        session.add(environment)
        _announce(session, environment, "updated", correlation_id=correlation_id)
    log.info("environment updated", environment=code, fields=sorted(given))
    return environment


async def delete_environment(code: str, *, uow: UnitOfWork, correlation_id: str | None = None) -> None:
    """Delete an environment no service is released to or runs in; its release history goes with it."""
    async with uow.begin() as session:
        environment = await lookups.require_environment(session, code)
        domain.refuse_environment_delete(
            code,
            released=await lookups.released_to(session, code),
            running=await lookups.running_in(session, code),
        )
        await session.exec(delete(Release).where(col(Release.environment) == code))
        _announce(session, environment, "deleted", correlation_id=correlation_id)
        await session.delete(environment)
    log.info("environment deleted", environment=code)


async def list_environments(*, uow: UnitOfWork) -> list[Environment]:
    async with uow.sessions() as session:
        return list((await session.exec(select(Environment).order_by(col(Environment.code)))).all())


async def get_environment(code: str, *, uow: UnitOfWork) -> Environment:
    async with uow.sessions() as session:
        return await lookups.require_environment(session, code)


async def announce_unannounced(*, uow: UnitOfWork) -> list[str]:
    """Announce (as "updated") every environment never announced: those made before Gantry
    announced environments, so the services that keep a copy learn them. Instances starting
    together take turns, so each environment is announced once."""
    async with uow.begin() as session:
        await serialize_on(session, "release-announce-environments")
        query = select(Environment).where(col(Environment.announced_at).is_(None)).order_by(col(Environment.code))
        pending = list((await session.exec(query)).all())
        for environment in pending:
            _announce(session, environment, "updated")
    if pending:
        log.info("environments announced", environments=[e.code for e in pending])
    return [e.code for e in pending]


def _announce(
    session: AsyncSession,
    environment: Environment,
    change: Literal["created", "updated", "deleted"],
    *,
    correlation_id: str | None = None,
) -> None:
    emit(
        session,
        EnvironmentChanged(
            code=environment.code,
            name=environment.name,
            tier=environment.tier,
            namespace=environment.namespace,
            ingress_class=environment.ingress_class,
            ingress_host=environment.ingress_host,
            change=change,
        ),
        correlation_id=correlation_id,
    )
    environment.announced_at = utcnow()
    if change != "deleted":
        session.add(environment)
