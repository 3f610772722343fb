"""The bus's dead letters (``<topic>.dlq``) on the board: read them, and an org admin's decision.

Kafka keeps the records; the gateway keeps what was decided of each (``dead_letter_decisions``).
Retrying sends the dead letter's event again, unchanged (same id), on its own topic through the
gateway's outbox, in the transaction that records the decision: the consumers that had applied it
skip it (their inbox knows the id), the one that dead-lettered it tries again. Discarding only
records the decision: the board stops offering it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.gateway import chains, domain
from services.gateway.chains import DeadLetter
from services.gateway.events_stream import EventsDep, EventStream, StreamItem
from shared.db import UtcDateTime
from shared.errors import Conflict, NotFound
from shared.events import Topic, utcnow
from shared.outbox import OutboxMessage, UnitOfWork, add_event, decode_envelope
from shared.paging import PagesDep
from shared.service import CurrentUser, RuntimeDep

router = APIRouter(tags=["dead letters"])
LETTER = "/dlq/{topic}/{partition}/{offset}"
TopicPath = Annotated[str, Path(pattern=r"^[a-z0-9.]+\.dlq$", max_length=128)]


class DeadLetterDecision(SQLModel, table=True):
    __tablename__ = "dead_letter_decisions"
    topic: str = Field(primary_key=True, max_length=128)
    partition: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    offset: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    decision: str = Field(max_length=16)  # retried | discarded
    by: str = Field(max_length=255)
    at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class DeadLetterPublic(DeadLetter):
    decision: str | None
    decided_by: str | None
    decided_at: datetime | None


def _public(letter: DeadLetter, decided: DeadLetterDecision | None) -> DeadLetterPublic:
    return DeadLetterPublic(
        **letter.model_dump(),
        decision=decided.decision if decided else None,
        decided_by=decided.by if decided else None,
        decided_at=decided.at if decided else None,
    )


@router.get("/dlq", response_model=list[DeadLetterPublic])
async def read_dlq(
    user: CurrentUser, runtime: RuntimeDep, stream: EventsDep, pages: PagesDep
) -> list[DeadLetterPublic]:
    """The bus's latest dead letters, newest first, each with why in short messages and what was
    decided of it (organization roles: all; project roles: their projects' events, without the value)."""
    letters = chains.visible_dead_letters(stream.dead_letters(), user)
    async with runtime.uow.sessions() as session:
        decided = {(d.topic, d.partition, d.offset): d for d in (await session.exec(select(DeadLetterDecision))).all()}
    shown = [_public(letter, decided.get((letter.topic, letter.partition, letter.offset))) for letter in letters]
    return pages.serve(shown, lambda d: (-d.failed_at.timestamp(), d.topic, d.partition, d.offset))


@router.post(f"{LETTER}/retry", response_model=DeadLetterPublic)
async def retry_dlq_event(
    topic: TopicPath, partition: int, offset: int, user: CurrentUser, runtime: RuntimeDep, stream: EventsDep
) -> DeadLetterPublic:
    """Send the dead letter's event again on its topic (org admins)."""
    user.require_org()
    item = _kept(stream, topic, partition, offset)
    return await _decide(item, "retried", user.user, runtime.uow)


@router.delete(LETTER, response_model=DeadLetterPublic)
async def discard_dlq_event(
    topic: TopicPath, partition: int, offset: int, user: CurrentUser, runtime: RuntimeDep, stream: EventsDep
) -> DeadLetterPublic:
    """Set the dead letter aside for good (org admins)."""
    user.require_org()
    item = _kept(stream, topic, partition, offset)
    return await _decide(item, "discarded", user.user, runtime.uow)


def _kept(stream: EventStream, topic: str, partition: int, offset: int) -> StreamItem:
    for item in stream.dead_letters():
        if (item.topic, item.partition, item.offset) == (topic, partition, offset):
            return item
    raise NotFound(
        f"no dead letter {topic}:{partition}:{offset} among the latest the gateway keeps: "
        "check the address (GET /api/gateway/dlq lists them)"
    )


async def _decide(item: StreamItem, decision: str, by: str, uow: UnitOfWork) -> DeadLetterPublic:
    letter = chains.dead_letter(item, with_value=True)
    async with uow.begin() as session:
        earlier = await session.get(DeadLetterDecision, (item.topic, item.partition, item.offset))
        if earlier is not None:
            raise Conflict(f"dead letter {item.topic}:{item.partition}:{item.offset} was {earlier.decision} already")
        if decision == "retried":
            await _send_again(session, item, letter)
        decided = DeadLetterDecision(
            topic=item.topic, partition=item.partition, offset=item.offset, decision=decision, by=by
        )
        session.add(decided)
    return _public(letter, decided)


async def _send_again(session: AsyncSession, item: StreamItem, letter: DeadLetter) -> None:
    try:
        envelope = decode_envelope((letter.value or "").encode())
    except ValueError as exc:
        raise Conflict(
            f"dead letter {item.topic}:{item.partition}:{item.offset} is not a Gantry event and cannot be "
            "sent again: discard it"
        ) from exc
    found = await session.exec(select(OutboxMessage).where(OutboxMessage.event_id == envelope.id))
    if found.first() is not None:
        raise Conflict(f"event {envelope.id} was sent again already: its consumers have it; discard this one")
    add_event(session, Topic(domain.original_topic(item.topic)), envelope, key=item.key or envelope.subject)
