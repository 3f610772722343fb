"""Deploy's read-side use cases, one session each: resources, deployment history, the running state."""

from __future__ import annotations

from sqlmodel import col, select

from services.deploy import domain, lookups
from services.deploy.cluster import ClusterDriver, RolloutStatus
from services.deploy.models import (
    AutoDeployRule,
    DeployingVersion,
    Deployment,
    Instance,
    RemovalNote,
    Resource,
    ResourceChoice,
    RunningState,
    TrackState,
)
from services.deploy.references import require_environment
from shared.logging import get_logger
from shared.outbox import UnitOfWork

log = get_logger(__name__)


async def list_resources(environment: str, *, uow: UnitOfWork) -> list[Resource]:
    async with uow.sessions() as session:
        await require_environment(session, environment)
        rows = await session.exec(
            select(Resource).where(Resource.environment == environment).order_by(col(Resource.name))
        )
        return list(rows.all())


async def list_deployments(project: str, service: str, environment: str, *, uow: UnitOfWork) -> list[Deployment]:
    """Every deployment of the service to the environment, newest first."""
    async with uow.sessions() as session:
        release = await lookups.service_in(session, project, service, environment)
        rows = await session.exec(
            select(Deployment)
            .where(Deployment.service_id == release.service_id)
            .where(Deployment.environment == environment)
            .order_by(col(Deployment.created_at).desc())
        )
        return list(rows.all())


async def running_state(
    project: str, service: str, environment: str, *, uow: UnitOfWork, driver: ClusterDriver
) -> RunningState:
    """Stable and canary tracks with the cluster's counts, the versions being deployed, settings."""
    async with uow.sessions() as session:
        release = await lookups.service_in(session, project, service, environment)
        key = (release.service_id, environment)
        # Each read sees what is committed when it runs (SQLite's reads outside a write, PostgreSQL's
        # read committed): the last deployment first, so a removal it names is already in the
        # tracks read after it (an undeploy deletes them in the same transaction).
        latest = await lookups.latest_deployment(session, *key)
        stable = await lookups.instance(session, *key, "stable")
        canary = await lookups.instance(session, *key, "canary")
        rule = await session.get(AutoDeployRule, key)
        choice = await session.get(ResourceChoice, key)
        rows = await session.exec(
            select(Deployment)
            .where(Deployment.service_id == key[0], Deployment.environment == environment)
            .where(col(Deployment.state).in_(domain.IN_FLIGHT_STATES))
            .order_by(col(Deployment.created_at).desc())
        )
        in_flight = list(rows.all())
    return RunningState(
        project=project,
        service=service,
        environment=environment,
        namespace=(stable or canary or release).namespace,
        stable=await track_state(stable, driver),
        canary=await track_state(canary, driver),
        deploying=[DeployingVersion.model_validate(d, update={"deployment_id": d.id}) for d in in_flight],
        auto_deploy=bool(rule and rule.enabled),
        resources=choice.resources if choice else [],
        removed=_removal(latest),
    )


def _removal(latest: Deployment | None) -> RemovalNote | None:
    """Say so when the last deployment took the workload out of the cluster."""
    if latest is None or not domain.workload_removed((latest.action, latest.state)):
        return None
    return RemovalNote(deployment_id=latest.id, by=latest.by, at=latest.finished_at)


async def track_state(instance: Instance | None, driver: ClusterDriver) -> TrackState | None:
    if instance is None:
        return None
    live = await _live_status(instance, driver)
    failed = instance.state == "failed"  # the last change failed; what ran before still runs
    return TrackState(
        track=instance.track,
        version=instance.version,
        image=instance.image,
        replicas=instance.replicas,
        state=instance.state if failed or live is None else live.state,
        desired=live.desired if live else instance.replicas,
        current=live.current if live else 0,
        updated=live.updated if live else 0,
        available=live.available if live else 0,
        message=instance.message if failed or live is None else live.message,
        deployment_id=instance.deployment_id,
        resource_revisions=domain.resource_revisions(instance.resource_snapshot),
    )


async def _live_status(instance: Instance, driver: ClusterDriver) -> RolloutStatus | None:
    try:
        return await driver.status(
            instance.project,
            instance.service,
            instance.environment,
            instance.namespace,
            track=instance.track,
        )
    except Exception as exc:  # noqa: BLE001 - cluster unreachable: show what was recorded
        log.warning("cluster status unavailable", error=repr(exc), track=instance.track)
        return None
