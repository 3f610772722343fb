"""The deploy admin's organization view: every service released to at least one environment, across
projects, and for each environment what is released there, what runs (stable and canary, with the
cluster's counts) and the last deployment. Services are known here through their releases.

Organization roles see every service; project roles only their projects' (``can_read_project``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, func
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.deploy import domain, history, known_services, views
from services.deploy.cluster import ClusterDriver
from services.deploy.models import (
    AutoDeployRule,
    Deployment,
    DeploymentPublic,
    Instance,
    ReleasedVersion,
    ServiceState,
    TrackState,
)
from shared.auth import Principal
from shared.errors import NotFound
from shared.outbox import UnitOfWork
from shared.paging import Pages, matches

HISTORY_PER_ENVIRONMENT = 20  # the detail's history; the whole of it is paged at …/deployments
LIVE_STATUS_CALLS = 8  # cluster calls in flight at once while a page is assembled


class ReleasedVersionView(SQLModel):
    version: str
    image: str
    released_at: datetime


class EnvironmentView(SQLModel):
    environment: str
    namespace: str
    versions: list[ReleasedVersionView]  # released there, the most recent first
    stable: TrackState | None
    canary: TrackState | None
    auto_deploy: bool
    last_deployment: DeploymentPublic | None


class EnvironmentDetail(EnvironmentView):
    deployments: list[DeploymentPublic]  # newest first, at most HISTORY_PER_ENVIRONMENT


class ServiceBase(SQLModel):
    service_id: str
    project: str
    service: str
    name: str | None  # known once catalog announced a change of the service
    state: ServiceState


class ServiceView(ServiceBase):
    environments: list[EnvironmentView]


class ServiceDetail(ServiceBase):
    environments: list[EnvironmentDetail]


@dataclass
class _Facts:
    """What the database says of some services, read in one session."""

    releases: dict[str, list[ReleasedVersion]] = field(default_factory=lambda: defaultdict(list))
    instances: dict[tuple[str, str, str], Instance] = field(default_factory=dict)
    auto_deploy: set[tuple[str, str]] = field(default_factory=set)
    last: dict[tuple[str, str], Deployment] = field(default_factory=dict)
    history: dict[tuple[str, str], list[Deployment]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Listed:
    service_id: str
    project: str
    service: str
    name: str | None
    state: ServiceState


async def list_services(
    user: Principal,
    q: str | None,
    pages: Pages,
    *,
    uow: UnitOfWork,
    driver: ClusterDriver,
) -> list[ServiceView]:
    """One page of the services the user may read, released somewhere, matching ``q``."""
    async with uow.sessions() as session:
        listed = [
            item
            for item in await _released_services(session)
            if user.can_read_project(item.project) and matches(q, item.project, item.service, item.name)
        ]
        served = pages.serve(listed, lambda s: (s.project, s.service, s.service_id))
        facts = await _facts(session, [item.service_id for item in served])
    live = _Live(driver)
    return list(await asyncio.gather(*(_service_view(item, facts, live) for item in served)))


async def read_service(
    user: Principal, project: str, service: str, *, uow: UnitOfWork, driver: ClusterDriver
) -> ServiceDetail:
    """One service, as in the list, with its recent deployments per environment."""
    user.require_project_read(project)
    async with uow.sessions() as session:
        found = await _released_services(session, project, service)
        if not found:
            raise NotFound(
                f"service {domain.subject(project, service)} is released to no environment: release it first "
                f"(POST /api/release/projects/{project}/services/{service}/releases)"
            )
        facts = await _facts(session, [found[0].service_id], with_history=True)
    view = await _service_view(found[0], facts, _Live(driver))
    environments = [
        EnvironmentDetail.model_validate(
            env, update={"deployments": _public(facts.history.get((view.service_id, env.environment), []))}
        )
        for env in view.environments
    ]
    return ServiceDetail.model_validate(view, update={"environments": environments})


async def _released_services(
    session: AsyncSession, project: str | None = None, service: str | None = None
) -> list[_Listed]:
    """Services with a version released (not withdrawn) somewhere, the most recently released first."""
    query = (
        select(ReleasedVersion.service_id, ReleasedVersion.project, ReleasedVersion.service)
        .where(col(ReleasedVersion.withdrawn_at).is_(None))
        .group_by(col(ReleasedVersion.service_id), col(ReleasedVersion.project), col(ReleasedVersion.service))
        .order_by(func.max(ReleasedVersion.released_at).desc())
    )
    if project is not None and service is not None:
        query = query.where(ReleasedVersion.project == project, ReleasedVersion.service == service)
    rows = (await session.exec(query)).all()
    known = await known_services.all_known(session)
    listed = []
    for service_id, project_code, service_code in rows:
        about = known.get(service_id)
        state: ServiceState = about.state if about else "enabled"
        if state != "deleted":
            listed.append(_Listed(service_id, project_code, service_code, about.name if about else None, state))
    return listed


async def _facts(session: AsyncSession, service_ids: Sequence[str], *, with_history: bool = False) -> _Facts:
    facts = _Facts()
    if not service_ids:
        return facts
    ids = list(service_ids)
    releases = await session.exec(
        select(ReleasedVersion)
        .where(col(ReleasedVersion.service_id).in_(ids), col(ReleasedVersion.withdrawn_at).is_(None))
        .order_by(col(ReleasedVersion.released_at).desc(), col(ReleasedVersion.id).desc())
    )
    for release in releases.all():
        facts.releases[release.service_id].append(release)
    instances = await session.exec(select(Instance).where(col(Instance.service_id).in_(ids)))
    facts.instances = {(i.service_id, i.environment, i.track): i for i in instances.all()}
    rules = await session.exec(
        select(AutoDeployRule).where(col(AutoDeployRule.service_id).in_(ids), col(AutoDeployRule.enabled))
    )
    facts.auto_deploy = {(rule.service_id, rule.environment) for rule in rules.all()}
    facts.last = await _last_deployments(session, ids)
    if with_history:
        for service_id, environment in {(r.service_id, r.environment) for rs in facts.releases.values() for r in rs}:
            facts.history[(service_id, environment)] = await history.newest_first(
                session, service_id, environment, limit=HISTORY_PER_ENVIRONMENT
            )
    return facts


async def _last_deployments(session: AsyncSession, ids: list[str]) -> dict[tuple[str, str], Deployment]:
    """The newest deployment of each (service, environment), in one query."""
    newest = (
        select(
            col(Deployment.service_id).label("service_id"),
            col(Deployment.environment).label("environment"),
            func.max(Deployment.created_at).label("at"),
        )
        .where(col(Deployment.service_id).in_(ids))
        .group_by(col(Deployment.service_id), col(Deployment.environment))
        .subquery()
    )
    rows = await session.exec(
        select(Deployment).join(
            newest,
            and_(
                col(Deployment.service_id) == newest.c.service_id,
                col(Deployment.environment) == newest.c.environment,
                col(Deployment.created_at) == newest.c.at,
            ),
        )
    )
    return {(d.service_id, d.environment): d for d in rows.all()}


class _Live:
    """The cluster's view of each track, a few calls at a time."""

    def __init__(self, driver: ClusterDriver) -> None:
        self.driver = driver
        self.calls = asyncio.Semaphore(LIVE_STATUS_CALLS)

    async def track(self, instance: Instance | None) -> TrackState | None:
        async with self.calls:
            return await views.track_state(instance, self.driver)


async def _service_view(item: _Listed, facts: _Facts, live: _Live) -> ServiceView:
    by_environment: dict[str, list[ReleasedVersion]] = defaultdict(list)
    for release in facts.releases.get(item.service_id, []):
        by_environment[release.environment].append(release)
    environments = []
    for environment, releases in sorted(by_environment.items()):
        key = (item.service_id, environment)
        stable, canary = (facts.instances.get((*key, track)) for track in ("stable", "canary"))
        last = facts.last.get(key)
        environments.append(
            EnvironmentView(
                environment=environment,
                namespace=(stable or canary or releases[0]).namespace,
                versions=[ReleasedVersionView.model_validate(r, from_attributes=True) for r in releases],
                stable=await live.track(stable),
                canary=await live.track(canary),
                auto_deploy=key in facts.auto_deploy,
                last_deployment=_public([last])[0] if last else None,
            )
        )
    return ServiceView(
        service_id=item.service_id,
        project=item.project,
        service=item.service,
        name=item.name,
        state=item.state,
        environments=environments,
    )


def _public(deployments: Sequence[Deployment]) -> list[DeploymentPublic]:
    return [DeploymentPublic.model_validate(d, from_attributes=True) for d in deployments]
