"""Versioning's use cases: webhook intake, pipelines, versions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, union
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.versioning import domain, parking, pipelines
from services.versioning.models import KnownService, Pipeline, PipelinePublic, Version
from shared import gitlab_hook
from shared.batches import first_row, index_rows, indexed
from shared.bus import read_ahead, readable_events, readable_payloads, reading_ahead
from shared.db import serialize_on, serialize_on_all
from shared.errors import InvalidInput, NotFound, PoisonEvent
from shared.events import (
    Envelope,
    HookReceived,
    PipelineSucceeded,
    ServiceChanged,
    ServiceCreated,
    VersionCreated,
)
from shared.logging import get_logger
from shared.outbox import UnitOfWork, claim_inbox, emit

log = get_logger(__name__)


async def on_service_created(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """Learn the service's repository, then apply the hooks that arrived before this did."""
    data = envelope.payload(ServiceCreated)
    async with uow.begin() as session:
        await serialize_on(session, _repository_lock(data.scm_project_id))  # a hook may be parking now
        if not await claim_inbox(session, envelope):
            return
        service = KnownService(
            service_id=data.service_id,
            project=data.project,
            code=data.service,
            repository_path=data.repository_path,
            scm_project_id=data.scm_project_id,
            repository_url=data.repository_url,
        )
        session.add(service)
        await session.flush()
        for parked in await parking.take(session, data.scm_project_id):
            await _apply_hook(session, service, parking.hook_of(parked), parked.delivery_id)


def _repository_lock(scm_project_id: str) -> str:
    """Hooks and the announcement of one repository take turns: else each could miss the other."""
    return f"versioning-repository:{scm_project_id}"


async def on_hook_received(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """A pipeline hook the front door checked: record the pipeline's status and announce its first
    success; a hook whose service is not known yet is kept until the service is announced."""
    data = envelope.payload(HookReceived)
    if data.event != gitlab_hook.PIPELINE_HOOK:
        return
    try:
        hook = gitlab_hook.parse_pipeline_hook(data.hook)
    except InvalidInput as exc:
        raise PoisonEvent(f"{envelope.id} is not a pipeline hook: {exc.detail}") from exc
    if hook.scm_project_id != data.scm_project_id:
        raise PoisonEvent(f"{envelope.id} names GitLab project {data.scm_project_id}, its hook {hook.scm_project_id}")
    async with uow.begin() as session:
        await serialize_on(session, _repository_lock(data.scm_project_id))  # its service may be arriving now
        if not await claim_inbox(session, envelope):
            return
        # The token was derived from this project id: it alone says whose hook this is.
        service = await first_row(session, KnownService, _SERVICE_OF_REPOSITORY, scm_project_id=data.scm_project_id)
        if service is None:
            await parking.park(session, hook, data.delivery_id)
            log.info(
                "hook kept until its service is announced",
                scm_project_id=data.scm_project_id,
                kept_for=str(parking.KEPT_FOR),
            )
            return
        await _apply_hook(session, service, hook, data.delivery_id)


async def prefetch_hooks(session: AsyncSession, envelopes: list[Envelope]) -> Sequence[object]:
    """For a batch of hooks (``shared.bus.with_prefetch``), in two statements: the services of the
    repositories they come from and the pipelines they name, which ``on_hook_received`` then finds
    without a statement each (``shared.batches.first_row``). On PostgreSQL the repositories' locks
    are taken first, in order, as each hook would take its own before reading."""
    hooks = [data for data in readable_payloads(envelopes, HookReceived) if data.event == gitlab_hook.PIPELINE_HOOK]
    repositories = sorted({data.scm_project_id for data in hooks})
    if not repositories:
        return []
    await serialize_on_all(session, [_repository_lock(repository) for repository in repositories])
    services = list((await session.exec(_SERVICES_OF_REPOSITORIES, params={"ids": repositories})).all())
    # the repository locks are what a hook and an announcement take before they write these rows
    index_rows(session, KnownService, {"scm_project_id": repositories}, services, locked=True)
    service_ids = {service.service_id for service in services}
    pipeline_ids = {_pipeline_id(data.hook) for data in hooks} - {None}
    if not service_ids or not pipeline_ids:
        return services
    values = {"service_ids": list(service_ids), "pipeline_ids": list(pipeline_ids)}
    found = list((await session.exec(_PIPELINES_OF_SERVICES, params=values)).all())
    index_rows(session, Pipeline, {"service_id": service_ids, "pipeline_id": pipeline_ids}, found, locked=True)
    return [*services, *found]


def _pipeline_id(hook: dict[str, Any]) -> int | None:
    """The pipeline id a hook's body names, if it is a plain number (else the hook reads its own)."""
    attributes = hook.get("object_attributes")
    value = attributes.get("id") if isinstance(attributes, dict) else None
    return value if type(value) is int else None


# Built once, values bound at each call: each hook and each success reads these
# (``python -m bench.statements``).
_SERVICE_OF_REPOSITORY = (
    select(KnownService)
    .where(KnownService.scm_project_id == bindparam("scm_project_id"))
    .order_by(col(KnownService.deleted))  # a repository path may come back for a new service
)
_SERVICES_OF_REPOSITORIES = select(KnownService).where(
    col(KnownService.scm_project_id).in_(bindparam("ids", expanding=True))
)
_PIPELINES_OF_SERVICES = select(Pipeline).where(
    col(Pipeline.service_id).in_(bindparam("service_ids", expanding=True)),
    col(Pipeline.pipeline_id).in_(bindparam("pipeline_ids", expanding=True)),
)
_SERVICES_VERSIONS = select(Version.id).where(Version.service_id == bindparam("service_id"))
_SUCCESSES_VERSIONS = select(Version.id).where(col(Version.service_id).in_(bindparam("service_ids", expanding=True)))
_VERSIONS_OF_SUCCESSES = (
    select(Version)
    .where(
        col(Version.id).in_(
            union(
                _SUCCESSES_VERSIONS.where(col(Version.pipeline_id).in_(bindparam("pipeline_ids", expanding=True))),
                _SUCCESSES_VERSIONS.where(col(Version.sha).in_(bindparam("shas", expanding=True))),
                _SUCCESSES_VERSIONS.where(col(Version.name).in_(bindparam("names", expanding=True))),
            )
        )
    )
    .order_by(col(Version.id))
)
_RELATED_VERSIONS = (
    select(Version)
    .where(
        col(Version.id).in_(
            union(
                _SERVICES_VERSIONS.where(Version.pipeline_id == bindparam("pipeline_id")),
                _SERVICES_VERSIONS.where(Version.sha == bindparam("sha")),
                _SERVICES_VERSIONS.where(Version.name == bindparam("name")),
            )
        )
    )
    .order_by(col(Version.id))
)


async def _apply_hook(
    session: AsyncSession, service: KnownService, hook: gitlab_hook.PipelineHook, delivery_id: str | None
) -> None:
    """Record the pipeline's progress; announce its first success that counts (``pipeline.succeeded``):
    every job's latest attempt succeeded, and the service was not deleted."""
    pipeline = await pipelines.record_hook(session, service, hook)
    if pipeline is None or pipeline.status != "success" or pipeline.succeeded:
        return
    pipeline.no_version_reason = (
        f"service {service.code!r} was deleted: its repository's pipelines make no version"
        if service.deleted
        else domain.no_version_reason(hook.jobs)
    )
    if pipeline.no_version_reason is None:
        pipeline.succeeded = True
        emit(session, _succeeded(service, hook), correlation_id=delivery_id)
        log.info("pipeline succeeded", pipeline_id=pipeline.pipeline_id, service_code=service.code)
    else:
        log.info("success makes no version", pipeline_id=pipeline.pipeline_id, reason=pipeline.no_version_reason)
    session.add(pipeline)


def _succeeded(service: KnownService, hook: gitlab_hook.PipelineHook) -> PipelineSucceeded:
    attrs, commit = hook.object_attributes, hook.commit or gitlab_hook.HookCommit()
    return PipelineSucceeded(
        service_id=service.service_id,
        project=service.project,
        service=service.code,
        pipeline_id=attrs.id,
        pipeline_url=attrs.url,
        ref=attrs.ref,
        tag=attrs.tag,
        sha=attrs.sha,
        commit_message=commit.message,
        commit_author=commit.author_name,
        finished_at=attrs.finished_at,
    )


async def _versions_ahead(session: AsyncSession, envelopes: list[Envelope]) -> Sequence[object]:
    """For a batch of successes, in one statement: the versions of its services that have one of
    its pipelines, one of its commits or one of the names they would take, which
    ``_related_versions`` then finds for each event without a statement (``shared.batches.indexed``).
    On PostgreSQL each service's versions lock is taken first, in order, as each success takes its
    own before it reads them."""
    successes = readable_events(envelopes, PipelineSucceeded)
    services = sorted({data.service_id for _, data in successes})
    if not services:
        return []
    await serialize_on_all(session, [_versions_lock(service_id) for service_id in services])
    by_column: dict[str, set[object]] = {
        "pipeline_id": {data.pipeline_id for _, data in successes},
        "sha": {data.sha for _, data in successes},
        "name": {_version_name(data, envelope.time) for envelope, data in successes},
    }
    values = {"service_ids": services, **{f"{column}s": list(found) for column, found in by_column.items()}}
    versions = list((await session.exec(_VERSIONS_OF_SUCCESSES, params=values)).all())
    for column, found in by_column.items():
        index_rows(session, Version, {"service_id": services, column: found}, versions, locked=True)
    return versions


# What ``on_pipeline_succeeded`` looks up for a batch of successes (each service, each pipeline,
# the versions related to them): three statements for the batch (``shared.bus.with_prefetch``,
# ``shared.batches.first_row``, ``_related_versions``).
prefetch_successes = reading_ahead(
    read_ahead(KnownService, PipelineSucceeded, service_id="service_id"),
    read_ahead(Pipeline, PipelineSucceeded, service_id="service_id", pipeline_id="pipeline_id"),
    _versions_ahead,
)


def _versions_lock(service_id: str) -> str:
    return f"versioning-versions:{service_id}"


async def on_pipeline_succeeded(envelope: Envelope, *, uow: UnitOfWork, registry: str) -> None:
    """ "A version is the record of one code commit": a successful pipeline makes its commit's version,
    announced with ``version.created``, or is linked to the version its commit already has."""
    data = envelope.payload(PipelineSucceeded)
    async with uow.begin() as session:
        await serialize_on(session, _versions_lock(data.service_id))  # one commit, one version
        if not await claim_inbox(session, envelope):
            return
        service = await session.get(KnownService, data.service_id)
        if service is None:
            raise PoisonEvent(f"pipeline.succeeded for unknown service {data.service_id}")
        if service.deleted:
            return
        version = _new_version(service, data, registry, envelope.time)
        related = await _related_versions(session, data, version.name)
        if any(v.pipeline_id == data.pipeline_id for v in related):
            return
        linked = domain.version_to_link(
            tag=data.tag, ref=data.ref, versions_of_commit=[v for v in related if v.sha == data.sha]
        )
        if linked is not None:
            await _link(session, data, linked.name, made=False)
            log.info("pipeline linked to its commit's version", version=linked.name, pipeline_id=data.pipeline_id)
            return
        if any(v.name == version.name for v in related):
            # two pipelines of one ref finished within the same second: the pipeline id tells them apart
            version.name = domain.with_pipeline(version.name, data.pipeline_id)
        session.add(version)
        await _link(session, data, version.name, made=True)
        emit(session, _created(version, data), cause=envelope)
    log.info("version created", version=version.name, service_code=data.service)


async def _related_versions(session: AsyncSession, data: PipelineSucceeded, name: str) -> list[Version]:
    """The service's versions of this pipeline, of its commit (the first made first) and any
    already named ``name``: from the batch's index where its read ahead covers them
    (``_versions_ahead``), else in one read, through a union of three indexed searches, where an OR
    of the three would be read through the service's index alone, every version of it."""
    ahead = [
        indexed(session, Version, service_id=data.service_id, sha=data.sha),  # first: its order is the commit's
        indexed(session, Version, service_id=data.service_id, pipeline_id=data.pipeline_id),
        indexed(session, Version, service_id=data.service_id, name=name),
    ]
    if all(rows is not None for rows in ahead):  # read ahead for the batch, with the ones it made since
        found = {id(version): version for rows in ahead for version in rows or ()}
        return sorted(found.values(), key=lambda version: (version.id is None, version.id or 0))
    values = {"service_id": data.service_id, "pipeline_id": data.pipeline_id, "sha": data.sha, "name": name}
    # The versions a batch made before this event are added to the database's answer instead of
    # flushed for it: a flush per event wrote them one statement each, not all in one at the end.
    with session.no_autoflush:
        stored = list((await session.exec(_RELATED_VERSIONS, params=values)).all())
    made = [
        version
        for version in session.new
        if isinstance(version, Version)
        and version.service_id == data.service_id
        and (version.pipeline_id == data.pipeline_id or version.sha == data.sha or version.name == name)
    ]
    return stored + made


async def _link(session: AsyncSession, data: PipelineSucceeded, version: str, *, made: bool) -> None:
    """Show on the pipeline which version it made, or which one its commit already had."""
    pipeline = await pipelines.find(session, data.service_id, data.pipeline_id)
    if pipeline is not None:
        pipeline.version, pipeline.version_made = version, made
        session.add(pipeline)


def _created(version: Version, data: PipelineSucceeded) -> VersionCreated:
    return VersionCreated(
        service_id=data.service_id,
        project=data.project,
        service=data.service,
        version=version.name,
        sha=version.sha,
        ref=version.ref,
        pipeline_id=version.pipeline_id,
        pipeline_url=version.pipeline_url,
        image=version.image,
        commit_message=version.commit_message,
        commit_author=version.commit_author,
        tag=data.tag,
    )


def _version_name(data: PipelineSucceeded, made_at: datetime) -> str:
    """A version's name from its pipeline's finish time, or, for a success without one, from when
    its ``pipeline.succeeded`` was made (the hook recorded): the same name however late it is
    handled, so a batch's read ahead knows it. (It was the time of handling: a batch that crossed
    a second read the versions of each success after that second again, one statement each.)"""
    return domain.version_name(ref=data.ref, tag=data.tag, finished_at=data.finished_at, now=made_at)


def _new_version(service: KnownService, data: PipelineSucceeded, registry: str, made_at: datetime) -> Version:
    return Version(
        service_id=data.service_id,
        name=_version_name(data, made_at),
        sha=data.sha,
        ref=data.ref,
        tag=data.tag,
        pipeline_id=data.pipeline_id,
        pipeline_url=data.pipeline_url,
        commit_message=data.commit_message,
        commit_author=data.commit_author,
        image=domain.image_reference(registry, service.repository_path, ref=data.ref, tag=data.tag, sha=data.sha),
    )


async def on_service_changed(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """A deleted service's repository makes no more versions; its versions stay on record. (A
    renamed or disabled service changes nothing here: a disabled one is not released or deployed.)"""
    data = envelope.payload(ServiceChanged)
    if data.change != "deleted":
        return
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        service = await session.get(KnownService, data.service_id)
        if service is None:
            log.info("deleted service was never known here", service_id=data.service_id)
            return
        service.deleted = True
        session.add(service)


async def _known_service(session: AsyncSession, project: str, code: str) -> KnownService:
    rows = await session.exec(
        select(KnownService)
        .where(KnownService.project == project)
        .where(KnownService.code == code)
        .where(col(KnownService.deleted).is_(False))
    )
    service = rows.first()
    if service is None:
        raise NotFound(f"service {code!r} of project {project!r} is not known to versioning (or was deleted)")
    return service


async def list_versions(project: str, code: str, *, uow: UnitOfWork) -> list[Version]:
    """The service's versions, newest first (the API pages them)."""
    async with uow.sessions() as session:
        service = await _known_service(session, project, code)
        rows = await session.exec(
            select(Version).where(Version.service_id == service.service_id).order_by(col(Version.id).desc())
        )
        return list(rows.all())


async def list_pipelines(project: str, code: str, *, uow: UnitOfWork) -> list[Pipeline]:
    """The service's pipelines, newest first (the API pages them, then shows each with its stages)."""
    async with uow.sessions() as session:
        service = await _known_service(session, project, code)
        rows = await session.exec(
            select(Pipeline).where(Pipeline.service_id == service.service_id).order_by(col(Pipeline.pipeline_id).desc())
        )
        return list(rows.all())


async def show_pipelines(shown: list[Pipeline], *, uow: UnitOfWork) -> list[PipelinePublic]:
    async with uow.sessions() as session:
        return await pipelines.views(session, shown)
