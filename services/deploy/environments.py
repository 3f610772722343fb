"""The environments deploy knows, as release announces them on ``environment.changed``.

Deploy checks references against them (a resource or a deployment for an environment that does
not exist is a 404) and renders a service's routes with their Ingress settings.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.events import Envelope, EnvironmentChanged
from shared.logging import get_logger
from shared.outbox import UnitOfWork, claim_inbox

log = get_logger(__name__)


class KnownEnvironment(SQLModel, table=True):
    __tablename__ = "deploy_environments"
    code: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=128)
    tier: str = Field(max_length=16)
    namespace: str = Field(max_length=63)
    ingress_class: str | None = Field(default=None, max_length=253)
    ingress_host: str | None = Field(default=None, max_length=253)


async def on_environment_changed(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """Keep the environment as release describes it; forget it once deleted."""
    changed = envelope.payload(EnvironmentChanged)
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        known = await session.get(KnownEnvironment, changed.code)
        if changed.change == "deleted":
            if known is not None:
                await session.delete(known)
        else:
            fields = changed.model_dump(include=set(KnownEnvironment.model_fields))
            session.add(known.sqlmodel_update(fields) if known else KnownEnvironment(**fields))
    log.info("environment known", environment=changed.code, change=changed.change)


async def find_environment(session: AsyncSession, code: str) -> KnownEnvironment | None:
    return await session.get(KnownEnvironment, code)


async def find_environments(session: AsyncSession, codes: Collection[str]) -> dict[str, KnownEnvironment]:
    """The known environments among ``codes``, by code, in one statement."""
    if not codes:
        return {}
    rows = await session.exec(select(KnownEnvironment).where(col(KnownEnvironment.code).in_(sorted(codes))))
    return {environment.code: environment for environment in rows.all()}


async def list_environments(session: AsyncSession) -> list[KnownEnvironment]:
    return list((await session.exec(select(KnownEnvironment).order_by(col(KnownEnvironment.code)))).all())
