"""A pipeline's progress: its status and jobs as the newest hook tells them, and how it reads.

GitLab sends one hook per status change, each listing every attempt of every job (``builds[]``).
They may arrive out of order, so a hook older than what the pipeline already shows changes
nothing (``domain.hook_is_older``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import bindparam
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.versioning import domain
from services.versioning.models import (
    JobBase,
    JobPublic,
    KnownService,
    Pipeline,
    PipelineJob,
    PipelinePublic,
    StagePublic,
)
from shared import gitlab_hook
from shared.batches import first_row
from shared.events import utcnow
from shared.logging import get_logger

log = get_logger(__name__)
JOB_COLUMNS = set(JobBase.model_fields) - {"job_id"}


_FIND = (  # built once: each hook and each success reads it (``python -m bench.statements``)
    select(Pipeline)
    .where(Pipeline.service_id == bindparam("service_id"))
    .where(Pipeline.pipeline_id == bindparam("pipeline_id"))
)


async def find(session: AsyncSession, service_id: str, pipeline_id: int) -> Pipeline | None:
    """The service's pipeline; in a batch that read its pipelines ahead, from them (``first_row``)."""
    return await first_row(session, Pipeline, _FIND, service_id=service_id, pipeline_id=pipeline_id)


async def record_hook(session: AsyncSession, service: KnownService, hook: gitlab_hook.PipelineHook) -> Pipeline | None:
    """The pipeline with this hook's status and jobs; ``None`` when the hook is older than what the
    pipeline already shows (it changes nothing)."""
    attrs = hook.object_attributes
    newest_job = max((job.id for job in hook.jobs), default=None)
    pipeline = await find(session, service.service_id, attrs.id)
    if pipeline is None:
        pipeline = Pipeline(
            service_id=service.service_id, pipeline_id=attrs.id, status=attrs.status, ref=attrs.ref, sha=attrs.sha
        )
    elif domain.hook_is_older(
        seen_status=pipeline.status, seen_newest_job=pipeline.newest_job_id, status=attrs.status, newest_job=newest_job
    ):
        log.info("older hook ignored", pipeline_id=attrs.id, status=attrs.status, shown=pipeline.status)
        return None
    pipeline.status, pipeline.ref, pipeline.tag, pipeline.sha = attrs.status, attrs.ref, attrs.tag, attrs.sha
    pipeline.url = attrs.url or pipeline.url
    pipeline.created_at = attrs.created_at or pipeline.created_at
    pipeline.finished_at = attrs.finished_at if attrs.status in domain.FINISHED else None
    pipeline.stages = ",".join(attrs.stages) or pipeline.stages
    if newest_job is not None:
        pipeline.newest_job_id = max(newest_job, pipeline.newest_job_id or 0)
    pipeline.updated_at = utcnow()
    session.add(pipeline)
    await _record_jobs(session, pipeline, hook.jobs)
    return pipeline


async def _record_jobs(session: AsyncSession, pipeline: Pipeline, jobs: Sequence[gitlab_hook.HookJob]) -> None:
    """Each attempt as this hook lists it (attempts only ever add up; a hook lists them all)."""
    if not jobs:
        return  # the pipeline is written with the rest of the transaction (a success in one INSERT)
    await session.flush()
    assert pipeline.id is not None  # flushed
    rows = await session.exec(select(PipelineJob).where(PipelineJob.pipeline_row == pipeline.id))
    kept = {row.job_id: row for row in rows.all()}
    for job in jobs:
        row = kept.get(job.id) or PipelineJob(pipeline_row=pipeline.id, job_id=job.id, name=job.name, status=job.status)
        row.sqlmodel_update(job.model_dump(include=JOB_COLUMNS))
        kept[job.id] = row
        session.add(row)


async def views(session: AsyncSession, pipelines: Sequence[Pipeline]) -> list[PipelinePublic]:
    """The pipelines as the API shows them: each stage with its status and its jobs' attempts."""
    rows = await session.exec(
        select(PipelineJob)
        .where(col(PipelineJob.pipeline_row).in_([pipeline.id for pipeline in pipelines]))
        .order_by(col(PipelineJob.job_id))
    )
    jobs: dict[int, list[PipelineJob]] = defaultdict(list)
    for job in rows.all():
        jobs[job.pipeline_row].append(job)
    return [view(pipeline, jobs[pipeline.id or 0]) for pipeline in pipelines]


def view(pipeline: Pipeline, jobs: Sequence[PipelineJob]) -> PipelinePublic:
    latest = {job.job_id for job in domain.latest_attempts(jobs)}
    names = dict.fromkeys([name for name in pipeline.stages.split(",") if name] + [job.stage for job in jobs])
    stages = []
    for name in names:
        of_stage = [job for job in jobs if job.stage == name]
        stages.append(
            StagePublic(
                name=name,
                status=domain.stage_status(of_stage) if of_stage else None,
                jobs=[JobPublic(**job.model_dump(), latest=job.job_id in latest) for job in of_stage],
            )
        )
    return PipelinePublic(**pipeline.model_dump(exclude={"stages"}), stages=stages)
