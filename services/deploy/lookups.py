"""Reads inside a use case's session, with the guide's answers when something is missing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import BindParameter, bindparam
from sqlalchemy.orm import aliased
from sqlalchemy.sql.selectable import ScalarSelect
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from services.deploy.domain import subject
from services.deploy.models import AutoDeployRule, Deployment, Instance, ReleasedVersion, Resource
from shared.errors import Conflict, InvalidInput, NotFound


async def service_in(session: AsyncSession, project: str, service: str, environment: str) -> ReleasedVersion:
    """The newest release of the service to ``environment`` (its id and namespace)."""
    rows = await session.exec(
        select(ReleasedVersion)
        .where(ReleasedVersion.project == project, ReleasedVersion.service == service)
        .where(ReleasedVersion.environment == environment)
        .order_by(col(ReleasedVersion.released_at).desc(), col(ReleasedVersion.id).desc())
    )
    release = rows.first()
    if release is None:
        raise NotFound(
            f"service {subject(project, service)} has no version released to {environment}: "
            f"release it to {environment} first "
            f"(POST /api/release/projects/{project}/services/{service}/releases)"
        )
    return release


async def released(
    session: AsyncSession, project: str, service: str, environment: str, version: str
) -> ReleasedVersion:
    """The release of ``version`` to ``environment``: only released versions can be deployed."""
    rows = await session.exec(
        select(ReleasedVersion)
        .where(ReleasedVersion.project == project, ReleasedVersion.service == service)
        .where(ReleasedVersion.environment == environment, ReleasedVersion.version == version)
        .where(col(ReleasedVersion.withdrawn_at).is_(None))  # withdrawn: no longer released there
    )
    release = rows.first()
    if release is None:
        raise Conflict(
            f"version {version} of {subject(project, service)} is not released to {environment}: "
            f"release version {version} to {environment} first"
        )
    return release


async def instance(session: AsyncSession, service_id: str, environment: str, track: str) -> Instance | None:
    return await session.get(Instance, (service_id, environment, track))


async def running(session: AsyncSession, project: str, service: str, environment: str, track: str) -> Instance:
    """What runs on ``track``; a clear 409 when nothing was deployed there yet."""
    release = await service_in(session, project, service, environment)
    found = await instance(session, release.service_id, environment, track)
    if found is None:
        raise Conflict(
            f"{subject(project, service)} has no {track} deployment in {environment} yet "
            "(one may still be applying: see its deployments)"
        )
    return found


async def resource_snapshot(session: AsyncSession, environment: str, names: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"type", "data", "revision", "secret", "sealed"}}`` of the chosen resources, as they
    are defined now (secret values sealed, as stored: ``sealed.py``)."""
    if not names:
        return {}
    rows = await session.exec(
        select(Resource).where(Resource.environment == environment, col(Resource.name).in_(names))
    )
    found = {r.name: _snapshot_of(r) for r in rows.all()}
    missing = [name for name in names if name not in found]
    if missing:
        raise InvalidInput(
            f"unknown resource(s) {', '.join(missing)} in environment {environment}: create them "
            f"with POST /api/deploy/environments/{environment}/resources"
        )
    return {name: found[name] for name in names}


def _snapshot_of(resource: Resource) -> dict[str, Any]:
    snapshot: dict[str, Any] = {"type": resource.type, "data": dict(resource.data), "revision": resource.revision}
    if resource.secret is not None:  # a resource from before values were sealed has all of them in data
        snapshot |= {"secret": list(resource.secret), "sealed": dict(resource.sealed or {})}
    return snapshot


_REMOVAL = aliased(Deployment)


def _manual_since_removal(service_id: Any, environment: Any) -> SelectOfScalar[str]:
    """The manual deploys of a service to an environment with no removal at or after them."""
    return (
        select(Deployment.id)
        .where(Deployment.service_id == service_id, Deployment.environment == environment)
        .where(Deployment.trigger == "manual", Deployment.action == "deploy")
        .where(
            ~select(_REMOVAL.id)
            .where(_REMOVAL.service_id == Deployment.service_id, _REMOVAL.environment == Deployment.environment)
            .where(_REMOVAL.action == "undeploy", _REMOVAL.state == "removed")
            .where(col(_REMOVAL.created_at) >= Deployment.created_at)
            .exists()
        )
        .limit(1)
    )


def _newest_stable_replicas(service_id: Any, environment: Any) -> ScalarSelect[Any]:
    return (
        select(Deployment.replicas)
        .where(Deployment.service_id == service_id, Deployment.environment == environment)
        .where(Deployment.track == "stable")
        .order_by(col(Deployment.created_at).desc())
        .limit(1)
        .scalar_subquery()
    )


_SERVICE_ID: BindParameter[str] = bindparam("service_id")
_ENVIRONMENT: BindParameter[str] = bindparam("environment")
# Built once, with their values bound at each call: building a statement costs SQLAlchemy about
# twice what running it does (``python -m bench.statements``).
MANUAL_SINCE_REMOVAL = _manual_since_removal(_SERVICE_ID, _ENVIRONMENT)
# What auto-deploy reads of a stable track, in one statement of two columns
STABLE_TRACK = select(
    _newest_stable_replicas(_SERVICE_ID, _ENVIRONMENT).label("last_replicas"),
    _manual_since_removal(_SERVICE_ID, _ENVIRONMENT).exists().label("manual"),
)
# The auto-deploy rules of a batch's services and environments, each with the same two answers
# about its stable track, in one statement: each track's answers still come from its own index
# look-ups, not from its history.
_RULE = AutoDeployRule
RULES_WITH_STABLE_TRACKS = select(
    _RULE,
    _newest_stable_replicas(_RULE.service_id, _RULE.environment).label("last_replicas"),
    _manual_since_removal(_RULE.service_id, _RULE.environment).exists().label("manual"),
).where(
    col(_RULE.service_id).in_(bindparam("service_ids", expanding=True)),
    col(_RULE.environment).in_(bindparam("environments", expanding=True)),
)


async def stable_track(session: AsyncSession, service_id: str, environment: str) -> tuple[int | None, bool]:
    """The newest stable deployment's replicas (None before the first), and whether one was made by
    hand since the workload was last removed (``has_manual_deployment``): one statement, no rows
    made into objects."""
    found = await session.exec(STABLE_TRACK, params={"service_id": service_id, "environment": environment})
    last_replicas, manual = found.one()
    return last_replicas, bool(manual)


async def rules_with_stable_tracks(
    session: AsyncSession, service_ids: Iterable[str], environments: Iterable[str]
) -> list[tuple[AutoDeployRule, int | None, bool]]:
    """The auto-deploy rules of these services in these environments, each with ``stable_track``
    of its service and environment: one statement for them all."""
    params = {"service_ids": sorted(set(service_ids)), "environments": sorted(set(environments))}
    found = await session.exec(RULES_WITH_STABLE_TRACKS, params=params)
    return [(rule, last_replicas, bool(manual)) for rule, last_replicas, manual in found.all()]


async def has_manual_deployment(session: AsyncSession, service_id: str, environment: str) -> bool:
    """A deployment made by hand since the workload was last removed (undeploy starts afresh):
    a manual deploy with no removal at or after it, in one statement."""
    found = await session.exec(MANUAL_SINCE_REMOVAL, params={"service_id": service_id, "environment": environment})
    return found.first() is not None


async def latest_deployment(session: AsyncSession, service_id: str, environment: str) -> Deployment | None:
    """The newest deployment of the service to the environment, whatever its track or action."""
    rows = await session.exec(
        select(Deployment)
        .where(Deployment.service_id == service_id, Deployment.environment == environment)
        .order_by(col(Deployment.created_at).desc())
        .limit(1)
    )
    return rows.first()


async def track_history(
    session: AsyncSession, service_id: str, environment: str, track: str, *, limit: int | None = None
) -> list[Deployment]:
    """Deployments of one track, newest first; only the newest ``limit`` when given.

    Each event of the auto-deploy chain reads this: without a limit, every past deployment (with
    its resource snapshot) would be loaded each time, so the work and the memory peak of one
    event would grow with the history."""
    key = {"service_id": service_id, "environment": environment, "track": track}
    if limit is None:
        return list((await session.exec(_TRACK_HISTORY, params=key)).all())
    return list((await session.exec(_TRACK_HISTORY_NEWEST, params=key | {"limit": limit})).all())


_TRACK_HISTORY = (  # built once (``python -m bench.statements``)
    select(Deployment)
    .where(Deployment.service_id == bindparam("service_id"), Deployment.environment == bindparam("environment"))
    .where(Deployment.track == bindparam("track"))
    .order_by(col(Deployment.created_at).desc())
)
_TRACK_HISTORY_NEWEST = _TRACK_HISTORY.limit(bindparam("limit"))


async def track_versions(session: AsyncSession, service_id: str, environment: str, track: str) -> list[tuple[str, str]]:
    """``(version, state)`` of each deployment of one track, newest first: two columns, no rows."""
    rows = await session.exec(
        select(Deployment.version, Deployment.state)
        .where(Deployment.service_id == service_id, Deployment.environment == environment)
        .where(Deployment.track == track)
        .order_by(col(Deployment.created_at).desc())
    )
    return [(version, state) for version, state in rows.all()]
