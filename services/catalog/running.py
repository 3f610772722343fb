"""Where each service runs, as deploy announces it on ``deploy.status``.

Catalog refuses to delete a service that still runs somewhere, so it keeps, per service, the
environments it runs in: a service runs in an environment after any state there except
``removed`` (an undeploy took its workload out of the cluster), which means it runs nowhere there.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.catalog.models import Service
from shared.db import UtcDateTime, serialize_on
from shared.events import DeployStatus, Envelope, utcnow
from shared.logging import get_logger
from shared.outbox import UnitOfWork, claim_inbox

log = get_logger(__name__)


class ServiceRun(SQLModel, table=True):
    """A service runs in an environment; the last state deploy announced there."""

    __tablename__ = "service_runs"
    service_id: str = Field(primary_key=True, max_length=32)
    environment: str = Field(primary_key=True, max_length=40)
    state: str = Field(max_length=16)
    deployment_id: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


def service_lock(service_id: str) -> str:
    """What transactions about one service's life (changes, deletion, where it runs) take turns on."""
    return f"catalog-service-{service_id}"


async def on_deploy_status(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """Remember that the service runs in the environment, or forget it once it was removed."""
    status = envelope.payload(DeployStatus)
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        await serialize_on(session, service_lock(status.service_id))
        if await session.get(Service, status.service_id) is None:
            # a late status of a service deleted since: it ran nowhere when it was deleted
            log.info("deploy status of an unknown service ignored", service_id=status.service_id)
            return
        run = await session.get(ServiceRun, (status.service_id, status.environment))
        if status.state == "removed":
            if run is not None:
                await session.delete(run)
        elif run is None:
            session.add(
                ServiceRun(
                    service_id=status.service_id,
                    environment=status.environment,
                    state=status.state,
                    deployment_id=status.deployment_id,
                )
            )
        else:
            run.state, run.deployment_id, run.updated_at = status.state, status.deployment_id, utcnow()
            session.add(run)
    log.info("service runs", subject=status.subject, environment=status.environment, state=status.state)


async def environments_running(session: AsyncSession, service_id: str) -> list[str]:
    """The environments the service runs in, by code."""
    rows = await session.exec(
        select(ServiceRun.environment).where(ServiceRun.service_id == service_id).order_by(col(ServiceRun.environment))
    )
    return list(rows.all())
