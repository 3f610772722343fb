"""The board's chains and dead letters, read from the events the gateway's stream keeps.

A chain is every event of one correlation id (a hook, or a person's request, and all it caused),
each a hop timed by the event's own ``time`` (to the millisecond). Dead letters are the records of
``<topic>.dlq``: the event that could not be applied, and why, in words a person reads.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from services.gateway import domain
from services.gateway.events_stream import StreamItem
from shared.auth import Principal
from shared.events import Topic

NOT_CHAINED = {Topic.AUDIT_RECORDED.value}  # a person's writes: the audit panel shows them


class Hop(BaseModel):
    topic: str
    type: str
    source: str
    subject: str | None
    event_id: str | None
    time: datetime
    at_ms: int  # since the chain's first hop
    summary: str
    failed: bool
    data: dict[str, Any] | None  # organization roles only


class Chain(BaseModel):
    correlation_id: str
    project: str | None
    service: str | None
    started_at: datetime
    duration_ms: int
    failed: bool
    hops: list[Hop]


class DeadLetter(BaseModel):
    topic: str  # the dead-letter topic
    partition: int
    offset: int
    original_topic: str
    consumer: str | None  # the service that gave up on it (unknown for older records)
    failed_at: datetime
    headline: str
    errors: list[str]
    event_id: str | None
    event_type: str | None
    correlation_id: str | None
    subject: str | None
    project: str | None
    value: str | None  # the record as it was (organization roles only)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def event_time(item: StreamItem) -> datetime:
    """The event's own time (``time``, or a dead letter's ``failed_at``), else the record's."""
    event = _dict(item.event)
    for name in ("time", "failed_at"):
        text = event.get(name)
        if isinstance(text, str):
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.fromtimestamp(max(item.timestamp, 0) / 1000, UTC)


def dead_event(item: StreamItem) -> dict[str, Any]:
    """The envelope a dead letter carries, when its value is JSON (else empty)."""
    value = item.event.get("value") if isinstance(item.event, dict) else None
    try:
        parsed = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def summary(topic: str, event: dict[str, Any]) -> str:
    """One line saying what happened."""
    if topic.endswith(domain.DLQ_SUFFIX):
        headline, errors = domain.readable_reasons(str(event.get("reason", "")))
        return "; ".join([headline, *errors])
    data = _dict(event.get("data"))
    if topic == Topic.HOOK_RECEIVED:
        attributes = _dict(_dict(data.get("hook")).get("object_attributes"))
        return " · ".join(
            str(part) for part in (data.get("event"), attributes.get("status"), attributes.get("ref")) if part
        )
    parts = [data.get(name) for name in ("version", "environment", "track", "state", "action", "change")]
    if data.get("trigger"):
        parts.append(f"({data['trigger']})")
    if data.get("desired") is not None and topic == Topic.DEPLOY_STATUS:
        parts.append(f"{data.get('available', 0)}/{data['desired']} available")
    if data.get("message"):
        parts.append(str(data["message"]))
    return " · ".join(str(part) for part in parts if part)


def is_failure(topic: str, event: dict[str, Any]) -> bool:
    """A dead letter, a failed deployment, or a GitLab pipeline that failed."""
    if topic.endswith(domain.DLQ_SUFFIX):
        return True
    data = _dict(event.get("data"))
    if topic == Topic.DEPLOY_STATUS:
        return data.get("state") == "failed"
    attributes = _dict(_dict(data.get("hook")).get("object_attributes"))
    return topic == Topic.HOOK_RECEIVED and attributes.get("status") == "failed"


def _chained(item: StreamItem) -> tuple[str | None, dict[str, Any]]:
    """The correlation id an item belongs to, and the envelope it is about."""
    if item.topic in NOT_CHAINED or not isinstance(item.event, dict):
        return None, {}
    envelope = dead_event(item) if item.topic.endswith(domain.DLQ_SUFFIX) else item.event
    correlation = envelope.get("correlation_id")
    return (correlation if isinstance(correlation, str) else None), envelope


def chains(items: Iterable[StreamItem], viewer: Principal, limit: int) -> list[Chain]:
    """The newest ``limit`` chains the viewer may see, newest first, each hop in time order."""
    grouped: dict[str, list[tuple[StreamItem, dict[str, Any]]]] = defaultdict(list)
    for item in items:
        correlation, envelope = _chained(item)
        if correlation:
            grouped[correlation].append((item, envelope))
    shown: list[Chain] = []
    for correlation, members in grouped.items():
        projects = [domain.project_of_event(envelope) for _, envelope in members]
        if domain.may_see_chain(viewer.reads_every_project(), projects, viewer.can_read_project):
            shown.append(_chain(correlation, members, viewer.reads_every_project()))
    shown.sort(key=lambda chain: chain.hops[-1].time, reverse=True)
    return shown[:limit]


def _chain(correlation: str, members: list[tuple[StreamItem, dict[str, Any]]], with_data: bool) -> Chain:
    members.sort(key=lambda member: (event_time(member[0]), member[0]))
    start = event_time(members[0][0])
    hops = [_hop(item, envelope, start, with_data) for item, envelope in members]
    named = next((_dict(envelope.get("data")) for _, envelope in members if domain.project_of_event(envelope)), {})
    return Chain(
        correlation_id=correlation,
        project=named.get("project"),
        service=named.get("service"),
        started_at=start,
        duration_ms=hops[-1].at_ms,
        failed=any(hop.failed for hop in hops),
        hops=hops,
    )


def _hop(item: StreamItem, envelope: dict[str, Any], start: datetime, with_data: bool) -> Hop:
    event = _dict(item.event)
    at = event_time(item)
    data = _dict(envelope.get("data"))
    return Hop(
        topic=item.topic,
        type=str(envelope.get("type") or item.topic),
        source=str(envelope.get("source") or ""),
        subject=envelope.get("subject"),
        event_id=envelope.get("id"),
        time=at,
        at_ms=round((at - start).total_seconds() * 1000),
        summary=summary(item.topic, event),
        failed=is_failure(item.topic, event),
        data=data if with_data else None,
    )


def dead_letter(item: StreamItem, *, with_value: bool) -> DeadLetter:
    """A dead letter as the board shows it."""
    record = _dict(item.event)
    envelope = dead_event(item)
    headline, errors = domain.readable_reasons(str(record.get("reason") or ""))
    return DeadLetter(
        topic=item.topic,
        partition=item.partition,
        offset=item.offset,
        original_topic=str(record.get("topic") or item.topic.removesuffix(domain.DLQ_SUFFIX)),
        consumer=record.get("consumer"),
        failed_at=event_time(item),
        headline=headline,
        errors=errors,
        event_id=envelope.get("id"),
        event_type=envelope.get("type"),
        correlation_id=envelope.get("correlation_id"),
        subject=envelope.get("subject"),
        project=domain.project_of_event(envelope),
        value=record.get("value") if with_value else None,
    )


def visible_dead_letters(items: Iterable[StreamItem], viewer: Principal) -> list[DeadLetter]:
    """Organization roles see every dead letter; project roles those of their projects' events."""
    letters = [dead_letter(item, with_value=viewer.reads_every_project()) for item in items]
    if viewer.reads_every_project():
        return letters
    return [letter for letter in letters if letter.project and viewer.can_read_project(letter.project)]
