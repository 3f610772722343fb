"""The services the gateway knows, as catalog announces them (``service.created``,
``service.changed``): a route may only lead to one of them, or to a platform service.

A deleted service is kept as a tombstone (``gone``), never matched again: its id is never reused,
and ``service.created`` arriving after its deletion (a consumer catching up on two topics) must
not bring it back. Its code may be used again by a new service, with a new id.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.gateway import domain
from shared.events import Envelope, ServiceChanged, ServiceCreated
from shared.logging import get_logger
from shared.outbox import UnitOfWork, claim_inbox

log = get_logger(__name__)


class KnownService(SQLModel, table=True):
    __tablename__ = "gateway_services"
    service_id: str = Field(primary_key=True, max_length=64)
    project: str = Field(max_length=40, index=True)
    service: str = Field(max_length=64)
    name: str = Field(max_length=128)
    gone: bool = False


def _known(data: ServiceCreated | ServiceChanged) -> KnownService:
    return KnownService(service_id=data.service_id, project=data.project, service=data.service, name=data.name)


async def on_service_created(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """Learn a new service (a tombstone stays a tombstone)."""
    data = envelope.payload(ServiceCreated)
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        if await session.get(KnownService, data.service_id) is None:
            session.add(_known(data))
    log.info("service known", project=data.project, service_code=data.service)


async def on_service_changed(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """Follow a renamed, disabled or enabled service; forget a deleted one."""
    data = envelope.payload(ServiceChanged)
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        known = await session.get(KnownService, data.service_id) or _known(data)
        if not known.gone:
            known.name, known.gone = data.name, data.change == "deleted"
        session.add(known)
    log.info("service changed", project=data.project, service_code=data.service, change=data.change)


async def is_known(session: AsyncSession, target: str) -> bool:
    """Whether a route target (a service id or 'project/service') names a service that exists."""
    query = select(KnownService.service_id).where(col(KnownService.gone).is_(False))
    project = domain.project_of(target)
    if project is not None:
        code = target.split("/", 1)[1]
        query = query.where(KnownService.project == project, KnownService.service == code)
    else:
        query = query.where(KnownService.service_id == target)
    return (await session.exec(query.limit(1))).first() is not None
