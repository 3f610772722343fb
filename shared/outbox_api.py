"""Every service's dead-lettered outbox rows, for org admins: list, retry, discard.

Through the gateway: ``/api/<service>/outbox/dead-letters``; ``gantry outbox`` calls these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel

from shared import outbox
from shared.auth import Principal
from shared.logging import get_logger
from shared.outbox import UnitOfWork
from shared.service import CurrentUser, Runtime, RuntimeDep

log = get_logger(__name__)
router = APIRouter(prefix="/outbox", tags=["outbox"])


class DeadLetterPublic(BaseModel):
    outbox_id: int
    event_id: str
    topic: str
    key: str
    payload_bytes: int
    created_at: datetime
    failed_at: datetime
    attempts: int
    reason: str

    @classmethod
    def of(cls, row: outbox.OutboxDeadLetter) -> DeadLetterPublic:
        return cls(payload_bytes=len(row.payload.encode(errors="replace")), **row.model_dump(exclude={"payload"}))


OutboxId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the outbox row (a database row id)")]


@router.get("/dead-letters", response_model=list[DeadLetterPublic])
async def read_dead_letters(user: CurrentUser, runtime: RuntimeDep) -> list[DeadLetterPublic]:
    """Outbox rows that failed for a permanent reason, oldest first; the rows of their key wait."""
    user.require_org()
    return [DeadLetterPublic.of(row) for row in await outbox.dead_letters(runtime.uow.sessions)]


@router.post("/dead-letters/{outbox_id}/retry", response_model=DeadLetterPublic)
async def retry_dead_letter(outbox_id: OutboxId, user: CurrentUser, runtime: RuntimeDep) -> DeadLetterPublic:
    """Put the row back in the outbox, before the rows of its key that waited: it is sent again at once."""
    return await _decide(outbox.retry_dead_letter, "retried", outbox_id, user, runtime)


@router.delete("/dead-letters/{outbox_id}", response_model=DeadLetterPublic)
async def discard_dead_letter(outbox_id: OutboxId, user: CurrentUser, runtime: RuntimeDep) -> DeadLetterPublic:
    """Drop the row for good (its event is never published); the rows of its key go on."""
    return await _decide(outbox.discard_dead_letter, "discarded", outbox_id, user, runtime)


async def _decide(
    decision: Callable[[UnitOfWork, int], Awaitable[outbox.OutboxDeadLetter]],
    done: str,
    outbox_id: int,
    user: Principal,
    runtime: Runtime,
) -> DeadLetterPublic:
    user.require_org()
    row = await decision(runtime.uow, outbox_id)
    log.warning(f"dead-lettered outbox row {done}", row_id=outbox_id, event_id=row.event_id, by=user.user)
    return DeadLetterPublic.of(row)
