"""Hooks that arrive before their service is known are kept, then applied when it is announced.

catalog makes the repository, then announces the service; a hook that overtakes the announcement
(versioning catching up on a backlog, say) is parked instead of refused, since GitLab does not
resend it by itself. Only hooks whose token the front door checked get here (the token is derived
from the GitLab project id), and they are bounded in number and age all the same: past the bound a
hook goes to the dead-letter topic with the reason, where it can be read and replayed.
"""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.versioning.models import ParkedHook
from shared import gitlab_hook
from shared.errors import PoisonEvent
from shared.events import utcnow

MAX_PARKED = 10_000
KEPT_FOR = timedelta(hours=24)


async def park(session: AsyncSession, hook: gitlab_hook.PipelineHook, delivery_id: str | None) -> None:
    await session.exec(delete(ParkedHook).where(col(ParkedHook.received_at) < utcnow() - KEPT_FOR))
    parked = (await session.exec(select(func.count()).select_from(ParkedHook))).one()
    if parked >= MAX_PARKED:
        raise PoisonEvent(
            f"no Gantry service has GitLab project {hook.scm_project_id} ({hook.project.path_with_namespace}), "
            f"and {MAX_PARKED} hooks already wait for services not announced yet"
        )
    session.add(
        ParkedHook(
            repository_path=hook.project.path_with_namespace,
            scm_project_id=hook.scm_project_id,
            body=hook.model_dump_json(),
            delivery_id=delivery_id,
        )
    )


async def take(session: AsyncSession, scm_project_id: str) -> list[ParkedHook]:
    """The hooks kept for this GitLab project, oldest first; they are removed as they are taken."""
    rows = await session.exec(
        select(ParkedHook)
        .where(ParkedHook.scm_project_id == scm_project_id)
        .where(col(ParkedHook.received_at) >= utcnow() - KEPT_FOR)
        .order_by(col(ParkedHook.id))
    )
    found = list(rows.all())
    for parked in found:
        await session.delete(parked)
    return found


def hook_of(parked: ParkedHook) -> gitlab_hook.PipelineHook:
    return gitlab_hook.PipelineHook.model_validate(json.loads(parked.body))
