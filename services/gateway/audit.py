"""The organization's audit trail: every service's ``audit.recorded`` kept in one table, asked in one call.

"Who deployed what to production this week, and why": ``GET /audit?environment=production&
action=deploy&since=…``, newest first, paged. Org admins and deploy admins read it (the same
organization roles that read the live events feed); records older than
``GANTRY_AUDIT_RETENTION_DAYS`` are pruned hourly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy import JSON, ColumnElement, and_, delete, or_
from sqlmodel import Field, SQLModel, col, select

from shared.db import UtcDateTime
from shared.events import AuditRecorded, Envelope, utcnow
from shared.logging import get_logger
from shared.outbox import UnitOfWork
from shared.paging import PagesDep
from shared.schemas import IsoDateTime
from shared.service import CurrentUser, Runtime, RuntimeDep

log = get_logger(__name__)
router = APIRouter(tags=["audit"])
PRUNE_EVERY_SECONDS = 3600.0
OUTCOMES = {"succeeded": (100, 399), "refused": (400, 499), "failed": (500, 599)}


class AuditEntry(SQLModel, table=True):
    """One ``audit.recorded`` event; its id is the event's, so a redelivery is kept once."""

    __tablename__ = "audit_entries"
    id: str = Field(primary_key=True, max_length=64)
    at: datetime = Field(sa_type=UtcDateTime, index=True)
    request_id: str = Field(max_length=64)
    correlation_id: str = Field(max_length=255, index=True)
    recorded_by: str = Field(max_length=32)
    action: str = Field(max_length=128, index=True)
    method: str = Field(max_length=16)
    path: str = Field(max_length=255)
    actor: str | None = Field(default=None, max_length=255, index=True)
    roles: list[str] = Field(default_factory=list, sa_type=JSON)
    project: str | None = Field(default=None, max_length=255, index=True)
    service: str | None = Field(default=None, max_length=255)
    environment: str | None = Field(default=None, max_length=255, index=True)
    target: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    outcome: int
    reason: str | None = None
    changed: bool


class AuditEntryPublic(SQLModel):
    id: str
    at: datetime
    request_id: str
    correlation_id: str
    recorded_by: str
    action: str
    method: str
    path: str
    actor: str | None
    roles: list[str]
    target: dict[str, str]
    outcome: int
    reason: str | None
    changed: bool


async def keep_record(envelope: Envelope, *, uow: UnitOfWork) -> bool:
    """Keep one record in the trail; False when it was kept already (a redelivery)."""
    data = envelope.payload(AuditRecorded)
    async with uow.begin() as session:
        if await session.get(AuditEntry, envelope.id) is not None:
            return False
        target = data.target
        fields = data.model_dump(exclude={"target"})
        session.add(
            AuditEntry(
                id=envelope.id,
                correlation_id=envelope.correlation_id,
                project=target.get("project"),
                service=target.get("service"),
                environment=target.get("environment"),
                target=target,
                **fields,
            )
        )
    return True


@dataclass(frozen=True)
class AuditQuery:
    """What to look for; every field left out matches everything."""

    environment: str | None = None
    actor: str | None = None
    action: str | None = None
    project: str | None = None
    service: str | None = None
    outcome: str | None = None
    correlation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        equal = {
            AuditEntry.environment: self.environment,
            AuditEntry.actor: self.actor,
            AuditEntry.project: self.project,
            AuditEntry.service: self.service,
            AuditEntry.correlation_id: self.correlation_id,
        }
        where = [col(column) == value for column, value in equal.items() if value is not None]
        if self.action:  # "deploy" matches every deploy action, "deploy.rollback" that one
            where.append(
                or_(col(AuditEntry.action) == self.action, col(AuditEntry.action).startswith(f"{self.action}."))
            )
        if self.outcome:
            low, high = OUTCOMES.get(self.outcome) or (int(self.outcome), int(self.outcome))
            where.append(col(AuditEntry.outcome).between(low, high))
        if self.since:
            where.append(col(AuditEntry.at) >= _utc(self.since))
        if self.until:
            where.append(col(AuditEntry.at) < _utc(self.until))
        return where


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def read_trail(
    query: AuditQuery, *, limit: int, after: tuple[Any, ...] | None, uow: UnitOfWork
) -> list[AuditEntry]:
    """Newest first; ``after`` is the (time, id) of the last record of the page before."""
    where = query.conditions()
    if after is not None:
        at, entry_id = datetime.fromisoformat(str(after[0])), str(after[1])
        before = col(AuditEntry.at) < at
        where.append(or_(before, and_(col(AuditEntry.at) == at, col(AuditEntry.id) < entry_id)))
    statement = (
        select(AuditEntry).where(*where).order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc()).limit(limit + 1)
    )
    async with uow.sessions() as session:
        return list((await session.exec(statement)).all())


async def prune(*, uow: UnitOfWork, keep: timedelta, now: datetime | None = None) -> int:
    """Forget records older than ``keep``; returns how many went."""
    cutoff = (now or utcnow()) - keep
    async with uow.sessions() as session:
        gone = await session.exec(delete(AuditEntry).where(col(AuditEntry.at) < cutoff))
        await session.commit()
    removed = int(gone.rowcount or 0)
    if removed:
        log.info("audit trail pruned", removed=removed, older_than=cutoff.isoformat())
    return removed


@asynccontextmanager
async def pruning(runtime: Runtime) -> AsyncIterator[None]:
    """Prune the trail when the gateway starts, then every hour."""
    keep = timedelta(days=runtime.settings.audit_retention_days)

    async def run() -> None:
        while True:
            try:
                await prune(uow=runtime.uow, keep=keep)
            except Exception as exc:  # the database is down: try again next time
                log.warning("audit trail pruning failed, will retry", error=repr(exc))
            await asyncio.sleep(PRUNE_EVERY_SECONDS)

    task = asyncio.create_task(run(), name="audit-pruning")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def audit_query(
    environment: Annotated[str | None, Query(max_length=255)] = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    action: Annotated[str | None, Query(max_length=128, description="an action, or a service for all its")] = None,
    project: Annotated[str | None, Query(max_length=255)] = None,
    service: Annotated[str | None, Query(max_length=255)] = None,
    outcome: Annotated[str | None, Query(pattern=r"^([1-5]\d\d|succeeded|refused|failed)$")] = None,
    correlation_id: Annotated[str | None, Query(max_length=255)] = None,
    since: Annotated[IsoDateTime | None, Query(description="ISO 8601; without a zone, UTC")] = None,
    until: Annotated[IsoDateTime | None, Query(description="ISO 8601, excluded; without a zone, UTC")] = None,
) -> AuditQuery:
    return AuditQuery(environment, actor, action, project, service, outcome, correlation_id, since, until)


@router.get("/audit", response_model=list[AuditEntryPublic])
async def read_audit(
    user: CurrentUser, runtime: RuntimeDep, pages: PagesDep, query: Annotated[AuditQuery, Depends(audit_query)]
) -> list[AuditEntry]:
    """Every service's write requests, newest first: who, with which roles, what, on which target,
    when, with what outcome and why (org admins and deploy admins)."""
    user.require_org("deploy-admin")
    rows = await read_trail(query, limit=pages.limit, after=pages.after, uow=runtime.uow)
    return pages.served(rows, lambda entry: (entry.at.isoformat(), entry.id))
