"""Deploy's use cases: each one transaction, ``deploy.requested`` through the outbox.

Manual actions and auto-deploy only write a deployment row and its ``deploy.requested``; the
worker (``services.deploy.worker``) applies every request the same way, whatever started it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.deploy import domain, known_services, lookups, references
from services.deploy.models import (
    AutoDeployRule,
    Deployment,
    DeploymentCreate,
    Instance,
    KnownService,
    PlacementColumns,
    ReleasedVersion,
    ResourceChoice,
    Strategy,
    Track,
    Trigger,
)
from services.deploy.resources import create_resource as create_resource  # one of deploy's use cases
from shared.batches import batch_memo, first_row, get_row, note_absent
from shared.bus import lock_ahead, read_ahead, readable_payloads, reading_ahead
from shared.db import serialize_on
from shared.errors import Conflict
from shared.events import DeployAction, DeployRequested, Envelope, Placement, VersionReleased, utcnow
from shared.logging import get_logger
from shared.outbox import UnitOfWork, claim_inbox, emit

log = get_logger(__name__)
AUTO_DEPLOY_USER = "auto-deploy"


async def record_released_version(envelope: Envelope, *, uow: UnitOfWork) -> Deployment | None:
    """Remember a released version; deploy it at once when an auto-deploy rule asks for it."""
    release = envelope.payload(VersionReleased)
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return None
        state = await known_services.state_of(session, release.service_id)
        if state == "deleted":
            return None  # a late release of a service already forgotten
        await _remember(session, release)
        deployment = await _auto_deployment(session, release, envelope, service_enabled=state == "enabled")
    if deployment is not None:
        log.info("auto-deploy requested", version=release.version, environment=release.environment)
    return deployment


async def _rules_ahead(session: AsyncSession, envelopes: list[Envelope]) -> Sequence[object]:
    """For a batch of releases, in one statement: the auto-deploy rules of their services and
    environments, and what auto-deploy reads of each such stable track (``lookups.stable_track``),
    kept in the batch's memo for ``_stable_track``. Read per release, that read would first flush
    what the releases before it added: an INSERT of each one's rows, and the flush's own work."""
    releases = readable_payloads(envelopes, VersionReleased)
    if not releases:
        return []
    named = {(data.service_id, data.environment) for data in releases}
    found = await lookups.rules_with_stable_tracks(session, *zip(*named, strict=True))
    memo = batch_memo(session)
    for rule, last_replicas, manual in found:
        if memo is not None:
            memo[(_READ_AHEAD, rule.service_id, rule.environment)] = (last_replicas, manual)
        named.discard((rule.service_id, rule.environment))
    note_absent(session, AutoDeployRule, named)  # no rule there: ``get_row`` answers without a statement
    return [rule for rule, _, _ in found]


# What ``record_released_version`` looks up for a batch of releases (each service's state, the
# version released, the auto-deploy rule with its stable track, the resource choice and the
# instances): five statements for the batch instead of six per release (``shared.bus.with_prefetch``,
# ``shared.batches.first_row``, ``get_row``). A service catalog never changed (most) has no state
# row: that is noted, so it is not looked for again per release. On PostgreSQL the batch first
# locks its services' released versions (one statement): unlocked, each release would read its
# own row again, and that read would first flush what the releases before it added.
prefetch_released = reading_ahead(
    lock_ahead(VersionReleased, lambda data: known_services.released_lock(data.service_id)),
    read_ahead(KnownService, VersionReleased, service_id="service_id"),
    read_ahead(
        ReleasedVersion,
        VersionReleased,
        locked=True,
        service_id="service_id",
        environment="environment",
        version="version",
    ),
    _rules_ahead,
    *(
        read_ahead(model, VersionReleased, service_id="service_id", environment="environment")
        for model in (ResourceChoice, Instance)
    ),
)


_RELEASED = select(ReleasedVersion).where(  # built once (``python -m bench.statements``)
    ReleasedVersion.service_id == bindparam("service_id"),
    ReleasedVersion.environment == bindparam("environment"),
    ReleasedVersion.version == bindparam("version"),
)


async def _remember(session: AsyncSession, release: VersionReleased) -> None:
    fields = release.model_dump(include=set(ReleasedVersion.model_fields) - {"id"})
    key = {"service_id": release.service_id, "environment": release.environment, "version": release.version}
    fields |= {"released_at": utcnow(), "withdrawn_at": None}
    await serialize_on(session, known_services.released_lock(release.service_id))  # a batch's: held already
    row = await first_row(session, ReleasedVersion, _RELEASED, **key)
    if row is None:
        row = ReleasedVersion(**fields)
    else:
        row.sqlmodel_update(fields)
    session.add(row)


async def _auto_deployment(
    session: AsyncSession, release: VersionReleased, cause: Envelope, *, service_enabled: bool
) -> Deployment | None:
    key = (release.service_id, release.environment)
    rule = await get_row(session, AutoDeployRule, key)
    if rule is None or not rule.enabled:
        return None
    choice = await get_row(session, ResourceChoice, key)
    track = await _stable_track(session, key, manual=choice is not None)
    stable = await lookups.instance(session, *key, "stable")
    replicas = domain.auto_deploy_replicas(
        domain.AutoDeployFacts(
            rule_enabled=rule.enabled,
            manually_deployed=track.manually_deployed,
            last_stable_replicas=track.last_replicas,
            running_version=stable.version if stable else None,
            running_state=stable.state if stable else None,
            released_version=release.version,
            service_enabled=service_enabled,
        )
    )
    if replicas is None or choice is None:
        return None
    deployment = _deployment(
        release,
        version=release.version,
        image=release.image,
        replicas=replicas,
        action="deploy",
        track="stable",
        resources=choice.resources,
        snapshot=choice.snapshot,
        trigger="auto",
        by=AUTO_DEPLOY_USER,
        correlation_id=cause.correlation_id,
    )
    _start(session, deployment, cause=cause)
    # the batch's next release of this service here sees this one as the newest
    _keep_stable_track(session, key, StableTrack(track.manually_deployed, deployment.replicas))
    return deployment


@dataclass(frozen=True)
class StableTrack:
    """What auto-deploy reads of a stable track's history."""

    manually_deployed: bool  # deployed by hand since the workload was last removed
    last_replicas: int | None  # the newest stable deployment's replicas


_READ_AHEAD = "stable track read ahead"


async def _stable_track(session: AsyncSession, key: tuple[str, str], *, manual: bool) -> StableTrack:
    """Read once per service and environment in a batch of releases (``shared.batches.batch_memo``;
    read ahead for the whole batch, ``_rules_ahead``), kept up to date by the auto
    deployments the batch makes; a batch makes no manual deployment and no removal, so what it
    read of those stays true."""
    memo = batch_memo(session)
    kept = memo.get(("stable track", *key)) if memo is not None else None
    if isinstance(kept, StableTrack) and (kept.manually_deployed or not manual):
        return kept
    read = memo.get((_READ_AHEAD, *key)) if memo is not None else None
    if isinstance(read, tuple):
        last_replicas, manually_deployed = read
    else:
        last_replicas, manually_deployed = await lookups.stable_track(session, *key)
    if isinstance(kept, StableTrack):  # the batch's own deployments are newer than what was read
        last_replicas = kept.last_replicas
    track = StableTrack(manually_deployed=manual and manually_deployed, last_replicas=last_replicas)
    _keep_stable_track(session, key, track)
    return track


def _keep_stable_track(session: AsyncSession, key: tuple[str, str], track: StableTrack) -> None:
    memo = batch_memo(session)
    if memo is not None:
        memo[("stable track", *key)] = track


async def request_deployment(
    data: DeploymentCreate,
    *,
    by: str,
    correlation_id: str,
    uow: UnitOfWork,
    request_key: str | None = None,
    request_fingerprint: str | None = None,
) -> Deployment:
    """Deploy a released version (rolling on the stable track, or a canary beside it)."""
    if data.replicas is not None:
        domain.validate_replicas(data.replicas)
    what = f"{domain.subject(data.project, data.service)} to {data.environment}"

    async def make(session: AsyncSession) -> Deployment:
        release = await references.release_to_deploy(
            session, data.project, data.service, data.environment, data.version
        )
        key = (release.service_id, data.environment)
        choice = await session.get(ResourceChoice, key)
        names = domain.choose_resources(data.resources, choice.resources if choice else None, what)
        snapshot = await lookups.resource_snapshot(session, data.environment, names)
        domain.check_environment_variables(snapshot)
        domain.guard_database_change(choice.snapshot if choice else None, snapshot, data.confirm_resource_change)
        track = domain.track_of("deploy", data.strategy)
        stable_runs = track == "stable" or await lookups.instance(session, *key, "stable") is not None
        domain.require_stable_for_canary(what, track=track, stable_runs=stable_runs)
        running = await lookups.instance(session, *key, track)
        replicas = data.replicas or (running.replicas if running else 1)
        if track == "stable":  # a canary's resources become "the last choice" only when promoted
            _remember_choice(session, choice, key, names, snapshot)
        return _deployment(
            release,
            version=release.version,  # "latest" named the version: the answer says which
            image=release.image,
            replicas=replicas,
            strategy=data.strategy,
            action="deploy",
            track=track,
            resources=names,
            snapshot=snapshot,
            trigger="manual",
            by=by,
            correlation_id=correlation_id,
        )

    return await _act(uow, request_key, make, request_fingerprint)


def _remember_choice(
    session: AsyncSession,
    choice: ResourceChoice | None,
    key: tuple[str, str],
    names: list[str],
    snapshot: dict[str, Any],
) -> None:
    choice = choice or ResourceChoice(service_id=key[0], environment=key[1])
    choice.resources, choice.snapshot, choice.updated_at = names, snapshot, utcnow()
    session.add(choice)


@dataclass(frozen=True)
class Action:
    """Someone acting on one service in one environment; a resent request carries the same key."""

    project: str
    service: str
    environment: str
    by: str
    correlation_id: str
    request_key: str | None = None
    request_fingerprint: str | None = None  # of the request, so a key resent with another body is refused


async def scale(act: Action, replicas: int, *, uow: UnitOfWork) -> Deployment:
    """Change the desired pod count of the stable track (same version, same resources)."""
    domain.validate_replicas(replicas)

    async def make(session: AsyncSession) -> Deployment:
        stable = await lookups.running(session, act.project, act.service, act.environment, "stable")
        return _again(stable, "scale", act, replicas=replicas)

    return await _act(uow, act.request_key, make, act.request_fingerprint)


async def rollback(act: Action, version: str | None, *, uow: UnitOfWork) -> Deployment:
    """Deploy an earlier version on the stable track (default: the one before the current)."""

    async def make(session: AsyncSession) -> Deployment:
        stable = await lookups.running(session, act.project, act.service, act.environment, "stable")
        target = version
        if target is None:
            history = await lookups.track_versions(session, stable.service_id, act.environment, "stable")
            target = domain.rollback_target(history, stable.version)
            if target is None:
                raise Conflict(
                    f"{domain.subject(act.project, act.service)} has no earlier version deployed to "
                    f'{act.environment}: name one with {{"version": "…"}}'
                )
        release = await lookups.released(session, act.project, act.service, act.environment, target)
        return _again(stable, "rollback", act, version=target, image=release.image)

    return await _act(uow, act.request_key, make, act.request_fingerprint)


async def promote_canary(act: Action, *, uow: UnitOfWork) -> Deployment:
    """The canary's version becomes the stable one; the canary track is then removed."""

    async def make(session: AsyncSession) -> Deployment:
        canary = await lookups.running(session, act.project, act.service, act.environment, "canary")
        stable = await lookups.instance(session, canary.service_id, act.environment, "stable")
        key = (canary.service_id, act.environment)
        _remember_choice(
            session, await session.get(ResourceChoice, key), key, canary.resources, canary.resource_snapshot
        )
        replicas = stable.replicas if stable else canary.replicas
        return _again(canary, "promote", act, track="stable", replicas=replicas)

    return await _act(uow, act.request_key, make, act.request_fingerprint)


async def abort_canary(act: Action, *, uow: UnitOfWork) -> Deployment:
    """Remove the canary track; the stable track keeps serving."""

    async def make(session: AsyncSession) -> Deployment:
        canary = await lookups.running(session, act.project, act.service, act.environment, "canary")
        return _again(canary, "abort", act)

    return await _act(uow, act.request_key, make, act.request_fingerprint)


async def set_auto_deploy(
    project: str, service: str, environment: str, enabled: bool, *, by: str, uow: UnitOfWork
) -> AutoDeployRule:
    """Auto-deploy each version released to the environment (after a first manual deployment)."""
    async with uow.begin() as session:
        release = await lookups.service_in(session, project, service, environment)
        key = (release.service_id, environment)
        if enabled and not await lookups.has_manual_deployment(session, *key):
            raise Conflict(
                "auto-deploy applies only after a first manual deployment: deploy "
                f"{domain.subject(project, service)} to {environment} by hand first "
                "(POST /api/deploy/deployments)"
            )
        rule = await session.get(AutoDeployRule, key) or AutoDeployRule(
            service_id=key[0], environment=environment, updated_by=by
        )
        rule.enabled, rule.updated_by, rule.updated_at = enabled, by, utcnow()
        session.add(rule)
    return rule


def _again(
    running: Instance,
    action: DeployAction,
    act: Action,
    *,
    track: Track | None = None,
    version: str | None = None,
    image: str | None = None,
    replicas: int | None = None,
) -> Deployment:
    """A deployment made from what a track runs: the same version, image, replicas and resources on
    the same track unless told otherwise (scale, rollback, promote and abort a canary)."""
    return _deployment(
        running,
        version=version or running.version,
        image=image or running.image,
        replicas=replicas or running.replicas,
        strategy="canary" if running.track == "canary" else "rolling",
        action=action,
        track=track or running.track,
        resources=running.resources,
        snapshot=running.resource_snapshot,
        by=act.by,
        correlation_id=act.correlation_id,
    )


def _deployment(
    origin: PlacementColumns | Placement,
    *,
    version: str,
    image: str,
    replicas: int,
    action: DeployAction,
    track: Track,
    resources: list[str],
    snapshot: dict[str, Any],
    by: str,
    correlation_id: str,
    strategy: Strategy = "rolling",
    trigger: Trigger = "manual",
) -> Deployment:
    return Deployment(
        **(Placement.of(origin) | {"version": version, "image": image}),
        id=uuid.uuid4().hex,
        replicas=replicas,
        strategy=strategy,
        action=action,
        track=track,
        resources=list(resources),
        resource_snapshot=dict(snapshot),
        trigger=trigger,
        by=by,
        correlation_id=correlation_id,
        desired=replicas,
    )


async def _act(
    uow: UnitOfWork,
    request_key: str | None,
    make: Callable[[AsyncSession], Awaitable[Deployment]],
    fingerprint: str | None = None,
) -> Deployment:
    """One deployment action in one transaction, once: a resent request (same user, same
    Idempotency-Key, same request) gets the deployment its first sending made. Only an enabled
    service is deployed (removing its canary is always allowed)."""
    async with uow.begin() as session:
        if (resent := await _already_made(session, request_key)) is not None:
            domain.check_resent((request_key or "").partition(":")[2], resent.request_fingerprint, fingerprint)
            return resent
        deployment = await make(session)
        if deployment.action != "abort":
            await known_services.require_enabled(session, deployment.service_id, deployment.project, deployment.service)
        deployment.request_fingerprint = fingerprint
        _start(session, deployment, request_key=request_key)
    return deployment


async def _already_made(session: AsyncSession, request_key: str | None) -> Deployment | None:
    """The deployment a resent request (same user, same Idempotency-Key) made the first time."""
    if request_key is None:
        return None
    rows = await session.exec(select(Deployment).where(Deployment.request_key == request_key))
    return rows.first()


def _start(
    session: AsyncSession, deployment: Deployment, cause: Envelope | None = None, request_key: str | None = None
) -> None:
    """Record the deployment and queue its ``deploy.requested`` in the same transaction."""
    deployment.request_key = request_key
    request = DeployRequested(
        **Placement.of(deployment),
        deployment_id=deployment.id,
        replicas=deployment.replicas,
        strategy=deployment.strategy,
        action=deployment.action,
        resources={name: body.get("revision") for name, body in deployment.resource_snapshot.items()},
        trigger=deployment.trigger,
        by=deployment.by,
    )
    session.add(deployment)
    emit(session, request, correlation_id=deployment.correlation_id, cause=cause)
