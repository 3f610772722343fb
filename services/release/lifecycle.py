"""What release learns from the other services: services announced, changed or deleted (catalog)
and where a service runs (deploy's statuses). Each one transaction, claimed in the inbox."""

from __future__ import annotations

from sqlalchemy import bindparam
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.release import domain, lookups
from services.release.models import Binding, KnownService, KnownVersion, Release, Running
from shared.batches import first_row
from shared.bus import lock_ahead, read_ahead, reading_ahead
from shared.db import serialize_on
from shared.errors import PoisonEvent
from shared.events import DeployStatus, Envelope, ReleaseWithdrawn, ServiceChanged, ServiceCreated, utcnow
from shared.logging import get_logger
from shared.outbox import UnitOfWork, claim_inbox, emit

log = get_logger(__name__)
DELETED_BY = "service-deleted"


async def on_service_created(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """Learn a service from catalog's announcement, so it can be released."""
    data = envelope.payload(ServiceCreated)
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        known = await session.get(KnownService, data.service_id)
        if known is not None:  # learned from its first version already, or announced again
            known.name = data.name
            session.add(known)
            return
        await _refuse_second_id(session, data.project, data.service, data.service_id)
        session.add(KnownService(id=data.service_id, project=data.project, code=data.service, name=data.name))
    log.info("service registered", project=data.project, service_code=data.service)


async def on_service_changed(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """A renamed, disabled or enabled service keeps its bindings; a deleted one is forgotten."""
    data = envelope.payload(ServiceChanged)
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        service = await lookups.lock_service(session, data.service_id)
        if data.change == "deleted":
            if service is not None:
                await _forget(session, service, envelope)
            return
        if service is None:  # service.created travels on another topic and may come later
            await _refuse_second_id(session, data.project, data.service, data.service_id)
            service = KnownService(id=data.service_id, project=data.project, code=data.service, name=data.name)
        service.name = data.name
        service.enabled = data.enabled
        session.add(service)
    log.info("service changed", project=data.project, service_code=data.service, change=data.change)


async def on_deploy_status(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """Keep where each service runs: a track runs after any status but ``removed``."""
    data = envelope.payload(DeployStatus)
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        await serialize_on(session, running_lock(data.service_id))  # a batch's: held already
        if not domain.runs_after(data.state):
            where = (col(Running.service_id) == data.service_id, col(Running.environment) == data.environment)
            # removing the stable track is an undeploy: nothing of the service is left there
            tracks = () if data.track == "stable" else (col(Running.track) == data.track,)
            await session.exec(delete(Running).where(*where, *tracks))
            log.info("service no longer runs", environment=data.environment, track=data.track)
            return
        key = {"service_id": data.service_id, "environment": data.environment, "track": data.track}
        running = await first_row(session, Running, _RUNNING, **key) or Running(
            service_id=data.service_id,
            project=data.project,
            service=data.service,
            environment=data.environment,
            track=data.track,
            version=data.version,
            state=data.state,
        )
        running.version, running.state, running.updated_at = data.version, data.state, utcnow()
        session.add(running)


def running_lock(service_id: str) -> str:
    """What the writers of where a service runs take turns on (``serialize_on``): a status (whose
    batch reads the tracks ahead and trusts what it read) and a deletion."""
    return f"release-running:{service_id}"


# Each status's track as release last knew it, for a batch of statuses in one statement
# (``shared.bus.with_prefetch``): ``on_deploy_status`` then finds it without a statement of its own.
# On PostgreSQL the batch locks its services' tracks first (one statement): unlocked, each status
# would read its track again, and that read would first flush the status before it.
prefetch_statuses = reading_ahead(
    lock_ahead(DeployStatus, lambda data: running_lock(data.service_id)),
    read_ahead(Running, DeployStatus, locked=True, service_id="service_id", environment="environment", track="track"),
)
_RUNNING = select(Running).where(  # built once: each deploy.status reads it (``python -m bench.statements``)
    col(Running.service_id) == bindparam("service_id"),
    col(Running.environment) == bindparam("environment"),
    col(Running.track) == bindparam("track"),
)


async def _forget(session: AsyncSession, service: KnownService, cause: Envelope) -> None:
    """A deleted service's bindings are withdrawn (announced), then everything release kept of it goes."""
    for binding, _environment in await lookups.bound_environments(session, service.id):
        data = ReleaseWithdrawn(
            service_id=service.id,
            project=service.project,
            service=service.code,
            environment=binding.environment,
            by=DELETED_BY,
        )
        emit(session, data, cause=cause)
    await serialize_on(session, running_lock(service.id))
    for table in (Running, Release, Binding, KnownVersion):
        await session.exec(delete(table).where(col(table.service_id) == service.id))
    await session.delete(service)
    log.info("service forgotten", project=service.project, service_code=service.code)


async def _refuse_second_id(session: AsyncSession, project: str, code: str, service_id: str) -> None:
    clash = await lookups.find_service(session, project, code)
    if clash is not None:
        raise PoisonEvent(f"service {project}/{code} is already known with id {clash.id}, not {service_id}")
