"""Release's use cases: each one transaction, outgoing events through the outbox."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from services.release import domain, lookups
from services.release.models import (
    Binding,
    Environment,
    KnownService,
    KnownVersion,
    LatestRelease,
    Release,
    ReleaseStarted,
    ReleaseTarget,
    ServiceReleases,
)
from shared.bus import read_ahead, reading_ahead
from shared.errors import Conflict, NotFound
from shared.events import (
    Envelope,
    ReleaseWithdrawn,
    VersionCreated,
    VersionReleased,
)
from shared.logging import get_logger
from shared.outbox import UnitOfWork, claim_inbox, emit

log = get_logger(__name__)


# Events from the other services


async def on_version_created(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """Record a new version; auto-release sends it to every bound environment if its ref matches."""
    data = envelope.payload(VersionCreated)
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        service = await lookups.lock_service(session, data.service_id)
        if service is None:
            # service.created travels on another topic and may come later (a consumer catching
            # up): the version says enough to know the service; catalog's event fills in the name.
            service = KnownService(id=data.service_id, project=data.project, code=data.service, name=data.service)
            session.add(service)
            await session.flush()
            log.info("service learned from its first version", project=data.project, service_code=data.service)
        if await lookups.find_version(session, service.id, data.version) is not None:
            log.info("version already known, not released again", version=data.version)
            return
        # the event's fields are validated already and typed as the row's: made, not validated again
        version = KnownVersion(**data.model_dump(exclude={"project", "service"}))
        session.add(version)
        skip = domain.auto_release_skip(
            version,
            enabled=service.auto_release,
            service_enabled=service.enabled,
            refs=service.refs(),
            tags=service.auto_release_tags,
        )
        if skip is not None:
            log.info("version not auto-released", version=data.version, ref=data.ref, reason=skip)
            return
        for _binding, environment in await lookups.bound_environments(session, service.id):
            _release(
                session,
                service,
                environment,
                version,
                trigger="auto",
                by=domain.AUTO_RELEASE_BY,
                cause=envelope,
            )


# What ``on_version_created`` looks up for a batch of versions (each service, its version of that
# name, its bindings and their environments): four statements for the batch instead of four per
# version (``shared.bus.with_prefetch``, ``shared.batches.first_row``); on PostgreSQL the services
# are locked first, as each event locks its own before it reads them.
prefetch_versions = reading_ahead(
    lookups.lock_services_ahead,
    read_ahead(KnownService, VersionCreated, id="service_id"),
    read_ahead(KnownVersion, VersionCreated, locked=True, service_id="service_id", version="version"),
    lookups.prefetch_bindings,
)


# Releases (project level)


async def release_service(
    project: str, code: str, environment: str, *, by: str, correlation_id: str, uow: UnitOfWork
) -> ReleaseStarted:
    """Release a service to an environment; the newest version auto-release would take goes there at once."""
    try:
        async with uow.begin() as session:
            service = await lookups.require_service(session, project, code)
            target = await lookups.require_environment(session, environment)
            await lookups.lock_service(session, service.id)
            domain.refuse_disabled(project, code, enabled=service.enabled)
            already = await lookups.find_binding(session, service.id, target.code) is not None
            domain.refuse_second_release(project, code, target.code, already_released=already)
            binding = Binding(service_id=service.id, environment=target.code, created_by=by)
            session.add(binding)
            versions = await lookups.versions_newest_first(session, service.id)
            chosen, why = domain.choose_initial_version(versions, service.refs(), service.auto_release_tags)
            release = None
            if chosen is not None:
                release = _release(
                    session, service, target, chosen, trigger="manual", by=by, correlation_id=correlation_id
                )
    except IntegrityError as exc:
        raise Conflict(f"service {code!r} was just released to environment {environment!r} by another request") from exc
    return ReleaseStarted(**_target(binding, target, release).model_dump(), version_choice=why)


async def withdraw_release(
    project: str, code: str, environment: str, *, by: str, correlation_id: str, uow: UnitOfWork
) -> None:
    """Un-release a service from an environment it no longer runs in; its history there is kept."""
    async with uow.begin() as session:
        service = await lookups.require_service(session, project, code)
        target = await lookups.require_environment(session, environment)
        await lookups.lock_service(session, service.id)
        binding = await _require_binding(session, service, target.code)
        running = await lookups.runs_in(session, service.id, target.code)
        domain.refuse_withdraw_while_running(project, code, target.code, running=running)
        await session.delete(binding)
        data = ReleaseWithdrawn(service_id=service.id, project=project, service=code, environment=target.code, by=by)
        emit(session, data, correlation_id=correlation_id)
    log.info("release withdrawn", project=project, service_code=code, environment=environment)


async def release_version(
    project: str,
    code: str,
    environment: str,
    version: str,
    *,
    by: str,
    correlation_id: str,
    uow: UnitOfWork,
) -> Release:
    """Release one known version to an environment the service is released to."""
    async with uow.begin() as session:
        service = await lookups.require_service(session, project, code)
        target = await lookups.require_environment(session, environment)
        await lookups.lock_service(session, service.id)
        domain.refuse_disabled(project, code, enabled=service.enabled)
        known = await lookups.find_version(session, service.id, version)
        if known is None:
            raise NotFound(
                f"version {version!r} of service {code!r} is not known to release: list the "
                f"versions with GET /api/versioning/projects/{project}/services/{code}/versions "
                "(a version appears once its pipeline succeeded)"
            )
        if await lookups.find_binding(session, service.id, target.code) is None:
            raise Conflict(
                f"service {code!r} is not released to environment {target.code!r}: release the "
                f"service to {target.code} first with POST /api/release/projects/{project}/"
                f"services/{code}/releases"
            )
        return _release(session, service, target, known, trigger="manual", by=by, correlation_id=correlation_id)


async def set_auto_release(
    project: str,
    code: str,
    enabled: bool,
    *,
    refs: Sequence[str] | None = None,
    tags: bool = False,
    uow: UnitOfWork,
) -> ServiceReleases:
    """Set auto-release (on or off, which refs, tags or not); it applies to the next version that arrives."""
    patterns = domain.validate_ref_patterns(refs)
    domain.validate_auto_release(enabled, patterns, tags)
    async with uow.begin() as session:
        service = await lookups.require_service(session, project, code)
        service.auto_release = enabled
        service.auto_release_refs = None if refs is None else json.dumps(list(patterns))
        service.auto_release_tags = tags
        session.add(service)
    log.info("auto-release set", project=project, service_code=code, enabled=enabled, refs=patterns, tags=tags)
    return await list_releases(project, code, uow=uow)


async def list_releases(project: str, code: str, *, uow: UnitOfWork) -> ServiceReleases:
    """The environments the service is released to, each with its latest release."""
    async with uow.sessions() as session:
        service = await lookups.require_service(session, project, code)
        targets = []
        for binding, environment in await lookups.bound_environments(session, service.id):
            latest = await lookups.latest_release(session, service.id, environment.code)
            targets.append(_target(binding, environment, latest))
    return ServiceReleases(
        service_id=service.id,
        project=service.project,
        service=service.code,
        enabled=service.enabled,
        auto_release=service.auto_release,
        auto_release_refs=list(service.refs()),
        auto_release_tags=service.auto_release_tags,
        environments=targets,
    )


async def list_release_history(
    project: str,
    code: str,
    environment: str,
    *,
    limit: int | None = None,
    before_id: int | None = None,
    uow: UnitOfWork,
) -> list[Release]:
    """Releases of the service to one environment, newest first (``limit`` of them, older than ``before_id``)."""
    async with uow.sessions() as session:
        service = await lookups.require_service(session, project, code)
        target = await lookups.require_environment(session, environment)
        await _require_binding(session, service, target.code)
        return await lookups.history(session, service.id, target.code, limit=limit, before_id=before_id)


async def _require_binding(session: AsyncSession, service: KnownService, environment: str) -> Binding:
    binding = await lookups.find_binding(session, service.id, environment)
    if binding is None:
        raise NotFound(
            f"service {service.code!r} is not released to environment {environment!r}: release it "
            f"with POST /api/release/projects/{service.project}/services/{service.code}/releases"
        )
    return binding


# The one code path that releases a version, whatever triggered it.


def _release(
    session: AsyncSession,
    service: KnownService,
    environment: Environment,
    version: KnownVersion,
    *,
    trigger: domain.Trigger,
    by: str,
    correlation_id: str | None = None,
    cause: Envelope | None = None,
) -> Release:
    data = VersionReleased(
        service_id=service.id,
        project=service.project,
        service=service.code,
        environment=environment.code,
        namespace=environment.namespace,
        version=version.version,
        image=version.image,
        trigger=trigger,
        by=by,
    )
    event = emit(session, data, correlation_id=correlation_id, cause=cause)
    files = domain.render_deployment_files(
        domain.ReleaseFacts(
            **data.model_dump(),
            sha=version.sha,
            ref=version.ref,
            pipeline_id=version.pipeline_id,
            released_at=event.time,
            release_event_id=event.id,
        )
    )
    release = Release(
        **data.model_dump(exclude={"project", "service"}),
        event_id=event.id,
        released_at=event.time,
        correlation_id=event.correlation_id,
        deployment_files=files,
    )
    session.add(release)
    log.info(
        "version released",
        service_code=service.code,
        environment=environment.code,
        version=version.version,
        trigger=trigger,
    )
    return release


def _target(binding: Binding, environment: Environment, release: Release | None) -> ReleaseTarget:
    latest = None
    if release is not None:
        latest = LatestRelease(
            version=release.version,
            trigger=release.trigger,
            by=release.by,
            released_at=release.released_at,
        )
    return ReleaseTarget(
        environment=environment.code,
        name=environment.name,
        namespace=environment.namespace,
        tier=environment.tier,
        released_since=binding.created_at,
        released_by=binding.created_by,
        latest=latest,
    )
