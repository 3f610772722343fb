"""What deploy knows of a service beyond its releases: its name and whether it is enabled (from
catalog's ``service.changed``), and which environments it was withdrawn from (``release.withdrawn``).

A disabled service is neither deployed nor auto-deployed until it is enabled again; a deleted one
is forgotten (its releases, auto-deploy rules and resource choices), and its late events ignored.
"""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.deploy import domain
from services.deploy.models import AutoDeployRule, KnownService, ReleasedVersion, ResourceChoice, ServiceState
from shared.batches import get_row
from shared.db import serialize_on
from shared.events import Envelope, ReleaseWithdrawn, ServiceChanged, utcnow
from shared.logging import get_logger
from shared.outbox import UnitOfWork, claim_inbox

log = get_logger(__name__)


async def on_service_changed(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """Keep the service's name and state; forget what deploy holds of it once it is deleted."""
    changed = envelope.payload(ServiceChanged)
    state: ServiceState = "deleted" if changed.change == "deleted" else "enabled" if changed.enabled else "disabled"
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        known = await session.get(KnownService, changed.service_id) or KnownService(
            service_id=changed.service_id, project=changed.project, service=changed.service, name=changed.name
        )
        if known.state == "deleted":
            return  # a late event for a service already forgotten
        known.project, known.service, known.name = changed.project, changed.service, changed.name
        known.state, known.updated_at = state, utcnow()
        session.add(known)
        if state == "deleted":
            await _forget(session, changed.service_id)
    log.info("service known", service_id=changed.service_id, state=state)


def released_lock(service_id: str) -> str:
    """What the writers of a service's released versions take turns on (``serialize_on``): a
    release (``handlers.record_released_version``, whose batch reads them ahead and trusts what it
    read), a withdrawal and a deletion."""
    return f"released-versions:{service_id}"


async def _forget(session: AsyncSession, service_id: str) -> None:
    await serialize_on(session, released_lock(service_id))
    for table in (ReleasedVersion, AutoDeployRule, ResourceChoice):
        await session.exec(delete(table).where(col(table.service_id) == service_id))


async def on_release_withdrawn(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """The service's versions for the environment are no longer released there: none may be
    deployed (a later release brings them back); what runs keeps running until undeployed."""
    withdrawn = envelope.payload(ReleaseWithdrawn)
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        await serialize_on(session, released_lock(withdrawn.service_id))
        await session.exec(
            update(ReleasedVersion)
            .where(col(ReleasedVersion.service_id) == withdrawn.service_id)
            .where(col(ReleasedVersion.environment) == withdrawn.environment)
            .where(col(ReleasedVersion.withdrawn_at).is_(None))
            .values(withdrawn_at=utcnow())
        )
    log.info("release withdrawn", service_id=withdrawn.service_id, environment=withdrawn.environment)


async def state_of(session: AsyncSession, service_id: str) -> ServiceState:
    """Enabled unless catalog said otherwise (services released before deploy heard of them are)."""
    known = await get_row(session, KnownService, service_id)
    return known.state if known else "enabled"


async def require_enabled(session: AsyncSession, service_id: str, project: str, service: str) -> None:
    domain.require_enabled(project, service, await state_of(session, service_id))


async def all_known(session: AsyncSession) -> dict[str, KnownService]:
    """Every service catalog told deploy about, by id (their names are searched)."""
    return {row.service_id: row for row in (await session.exec(select(KnownService))).all()}
