"""Release's use cases: each one transaction, outgoing events through the outbox."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.release import domain, lookups
from services.release.models import (
    Binding,
    Environment,
    EnvironmentCreate,
    KnownService,
    KnownVersion,
    LatestRelease,
    Release,
    ReleaseTarget,
    ServiceReleases,
)
from shared.errors import Conflict, NotFound, PoisonEvent
from shared.events import (
    Envelope,
    ServiceCreated,
    VersionCreated,
    VersionReleased,
)
from shared.logging import get_logger
from shared.outbox import UnitOfWork, claim_inbox, emit

log = get_logger(__name__)


# Environments (organization level)


async def create_environment(data: EnvironmentCreate, *, by: str, uow: UnitOfWork) -> Environment:
    code = domain.validate_environment_code(data.code)
    environment = Environment(
        code=code,
        name=domain.validate_name(data.name),
        tier=domain.validate_tier(data.tier),
        namespace=domain.namespace_for(code, data.namespace),
        created_by=by,
    )
    try:
        async with uow.begin() as session:
            if await session.get(Environment, code) is not None:
                raise Conflict(f"environment {code!r} already exists")
            query = select(Environment).where(Environment.namespace == environment.namespace)
            if (clash := (await session.exec(query)).first()) is not None:
                raise Conflict(
                    f"namespace {environment.namespace!r} is already used by environment "
                    f"{clash.code!r}: give this environment another namespace"
                )
            session.add(environment)
    except IntegrityError as exc:
        raise Conflict(
            f"environment {code!r} or namespace {environment.namespace!r} was just created by "
            "another request: see GET /api/release/environments"
        ) from exc
    log.info("environment created", environment=code, namespace=environment.namespace)
    return environment


async def list_environments(*, uow: UnitOfWork) -> list[Environment]:
    async with uow.sessions() as session:
        return list((await session.exec(select(Environment).order_by(col(Environment.code)))).all())


async def get_environment(code: str, *, uow: UnitOfWork) -> Environment:
    async with uow.sessions() as session:
        return await lookups.require_environment(session, code)


# Events from the other services


async def on_service_created(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """Learn a service from catalog's announcement, so it can be released."""
    data = envelope.payload(ServiceCreated)
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        known = await session.get(KnownService, data.service_id)
        if known is not None:  # learned from its first version already, or announced again
            known.name = data.name
            session.add(known)
            return
        clash = await lookups.find_service(session, data.project, data.service)
        if clash is not None:
            raise PoisonEvent(
                f"service {data.project}/{data.service} is already known with id {clash.id}, not {data.service_id}"
            )
        session.add(KnownService(id=data.service_id, project=data.project, code=data.service, name=data.name))
    log.info("service registered", project=data.project, service=data.service)


async def on_version_created(envelope: Envelope, *, uow: UnitOfWork) -> None:
    """Record a new version; with auto-release on, release it to every bound environment."""
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
            log.info("service learned from its first version", project=data.project, service=data.service)
        if await lookups.find_version(session, service.id, data.version) is not None:
            log.info("version already known, not released again", version=data.version)
            return
        version = KnownVersion.model_validate(data.model_dump(exclude={"project", "service"}))
        session.add(version)
        if not service.auto_release:
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


# Releases (project level)


async def release_service(
    project: str, code: str, environment: str, *, by: str, correlation_id: str, uow: UnitOfWork
) -> ReleaseTarget:
    """Release a service to an environment; its newest version, if any, goes there at once."""
    try:
        async with uow.begin() as session:
            service = await lookups.require_service(session, project, code)
            target = await lookups.require_environment(session, environment)
            await lookups.lock_service(session, service.id)
            already = await lookups.find_binding(session, service.id, target.code) is not None
            domain.refuse_second_release(project, code, target.code, already_released=already)
            binding = Binding(service_id=service.id, environment=target.code, created_by=by)
            session.add(binding)
            release = None
            if (newest := await lookups.newest_version(session, service.id)) is not None:
                release = _release(
                    session,
                    service,
                    target,
                    newest,
                    trigger="manual",
                    by=by,
                    correlation_id=correlation_id,
                )
    except IntegrityError as exc:
        raise Conflict(f"service {code!r} was just released to environment {environment!r} by another request") from exc
    return _target(binding, target, release)


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


async def set_auto_release(project: str, code: str, enabled: bool, *, uow: UnitOfWork) -> ServiceReleases:
    """Turn auto-release on or off; it applies to the next version that arrives."""
    async with uow.begin() as session:
        service = await lookups.require_service(session, project, code)
        service.auto_release = enabled
        session.add(service)
    log.info("auto-release set", project=project, service=code, enabled=enabled)
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
        auto_release=service.auto_release,
        environments=targets,
    )


async def list_release_history(project: str, code: str, environment: str, *, uow: UnitOfWork) -> list[Release]:
    """Every release of the service to one environment, newest first."""
    async with uow.sessions() as session:
        service = await lookups.require_service(session, project, code)
        target = await lookups.require_environment(session, environment)
        if await lookups.find_binding(session, service.id, target.code) is None:
            raise NotFound(
                f"service {code!r} is not released to environment {target.code!r}: release it "
                f"with POST /api/release/projects/{project}/services/{code}/releases"
            )
        return await lookups.history(session, service.id, target.code)


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
    release = Release.model_validate(
        data.model_dump(exclude={"project", "service"}),
        update={
            "event_id": event.id,
            "released_at": event.time,
            "correlation_id": event.correlation_id,
            "deployment_files": files,
        },
    )
    session.add(release)
    log.info(
        "version released",
        service=service.code,
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
