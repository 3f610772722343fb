"""Hooks that arrive before their service is known are kept, then applied when it is announced.

catalog makes the repository, then announces the service; a hook that overtakes the announcement
(versioning catching up on a backlog, say) is parked instead of refused, since GitLab does not
resend it by itself. Parked hooks are bounded in number and age: anyone can post to the webhook,
and only the service's announcement tells whose token to expect.
"""
from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import delete, func
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.versioning import domain
from services.versioning.models import ParkedHook
from shared.errors import UpstreamUnavailable
from shared.events import utcnow

MAX_PARKED = 1000
KEPT_FOR = timedelta(hours=24)


async def park(
    session: AsyncSession, hook: domain.PipelineHook, token: str | None, delivery_id: str | None
) -> None:
    await session.exec(delete(ParkedHook).where(col(ParkedHook.received_at) < utcnow() - KEPT_FOR))
    parked = (await session.exec(select(func.count()).select_from(ParkedHook))).one()
    if parked >= MAX_PARKED:
        raise UpstreamUnavailable(
            f"no Gantry service has the repository {hook.project.path_with_namespace!r}, and "
            f"{MAX_PARKED} hooks already wait for unknown repositories: check the hook's URL"
        )
    project_id = hook.project.id
    session.add(ParkedHook(
        repository_path=hook.project.path_with_namespace,
        scm_project_id=str(project_id) if project_id is not None else None,
        body=hook.model_dump_json(), token=token, delivery_id=delivery_id,
    ))  # fmt: skip


async def take(session: AsyncSession, repository_path: str, scm_project_id: str) -> list[ParkedHook]:
    """The hooks parked for this repository, oldest first; they are removed as they are taken."""
    rows = await session.exec(
        select(ParkedHook)
        .where(or_(ParkedHook.repository_path == repository_path, ParkedHook.scm_project_id == scm_project_id))
        .where(col(ParkedHook.received_at) >= utcnow() - KEPT_FOR)
        .order_by(col(ParkedHook.id))
    )
    found = list(rows.all())
    for parked in found:
        await session.delete(parked)
    return found


def hook_of(parked: ParkedHook) -> domain.PipelineHook:
    return domain.PipelineHook.model_validate(json.loads(parked.body))
