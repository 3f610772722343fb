"""The deploy worker: applies each ``deploy.requested`` to the cluster, reports ``deploy.status``.

One code path whatever started the request (a REST action or auto-deploy), in batches
(``services.deploy.requests``). A request already in the inbox is skipped before the cluster is
touched, so the same event twice is applied once; the inbox entry, the outcome and the
``deploy.status`` event are written in one transaction. Applying is idempotent (the same objects
again), so a crash between applying and recording only re-applies. A cluster error fails the
deployment with its reason instead of retrying forever. A rollout that is still progressing is
followed (``RolloutWatcher``) until it succeeds, fails or times out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.deploy import domain, lookups
from services.deploy.cluster import ClusterDriver, RolloutStatus, WorkloadSpec
from services.deploy.models import Deployment, Instance, Track
from shared import metrics
from shared.events import DeployRequested, DeployStatus, Envelope, Placement, utcnow
from shared.logging import get_logger
from shared.outbox import UnitOfWork, emit

log = get_logger(__name__)
APPLY_TIMEOUT_SECONDS = 120.0
ROLLOUT_DEADLINE_SECONDS = 660.0  # the Deployment's progressDeadlineSeconds (600) and a margin
FOLLOW_INTERVAL_SECONDS = 0.5

Follow = Callable[[str], None]
Values = Callable[[], Awaitable[dict[str, dict[str, Any]]]]  # the resources' values, read when applied
VALUELESS_ACTIONS = frozenset({"abort", "undeploy"})  # these remove workloads: no values are read


async def _drive(
    driver: ClusterDriver, request: DeployRequested, track: str, timeout: float, values: Values
) -> RolloutStatus:
    """The cluster's answer to the request; any error becomes a failed status with its reason."""
    try:
        async with asyncio.timeout(timeout):
            return await _apply(driver, request, track, values)
    except TimeoutError:
        reason = f"the cluster did not answer within {timeout:.0f}s"
    except Exception as exc:  # the cluster refused: fail this deployment, do not retry forever
        reason = str(exc) or repr(exc)
        log.exception("deploy request failed", deployment_id=request.deployment_id)
    return RolloutStatus("failed", request.replicas, 0, 0, 0, f"{request.action} failed: {reason}")


async def _apply(driver: ClusterDriver, request: DeployRequested, track: str, values: Values) -> RolloutStatus:
    where = (request.project, request.service, request.environment, request.namespace)
    if request.action == "abort":
        await driver.delete(*where, track="canary")
        return RolloutStatus("succeeded", 0, 0, 0, 0, "canary track removed")
    if request.action == "undeploy":
        await driver.remove(*where)
        return RolloutStatus("removed", 0, 0, 0, 0, f"removed from the cluster (namespace {request.namespace})")
    spec = WorkloadSpec(
        project=request.project,
        service=request.service,
        environment=request.environment,
        namespace=request.namespace,
        version=request.version,
        image=request.image,
        replicas=request.replicas,
        track=track,
        resources=await values(),
    )
    status = await driver.apply(spec)
    if request.action == "promote" and status.state != "failed":
        await driver.delete(*where, track="canary")
    return status


def _from_request(request: DeployRequested, track: Track, correlation_id: str) -> Deployment:
    return Deployment(
        **Placement.of(request),
        id=request.deployment_id,
        replicas=request.replicas,
        strategy=request.strategy,
        action=request.action,
        track=track,
        resources=list(request.resources),
        resource_snapshot={name: {"revision": revision} for name, revision in request.resources.items()},
        trigger=request.trigger,
        by=request.by,
        correlation_id=correlation_id,
    )


async def record_outcome(
    session: AsyncSession,
    deployment: Deployment,
    status: RolloutStatus,
    *,
    cause: Envelope | None = None,
    touch_track: bool = True,
) -> None:
    """Write ``status`` on the deployment (and its track), and queue ``deploy.status``."""
    deployment.state, deployment.message = status.state, status.message
    deployment.desired, deployment.current = status.desired, status.current
    deployment.updated, deployment.available = status.updated, status.available
    deployment.finished_at = utcnow() if status.state in domain.FINAL_STATES else None
    if deployment.finished_at is not None:
        metrics.count_on_commit(session, deployment.action, status.state)
    session.add(deployment)
    if touch_track:
        await _record_track(session, deployment, status)
    emit(
        session,
        DeployStatus(
            service_id=deployment.service_id,
            project=deployment.project,
            service=deployment.service,
            deployment_id=deployment.id,
            environment=deployment.environment,
            version=deployment.version,
            track=deployment.track,
            state=status.state,
            desired=status.desired,
            current=status.current,
            updated=status.updated,
            available=status.available,
            message=status.message,
        ),
        correlation_id=deployment.correlation_id,
        cause=cause,
    )


async def _record_track(session: AsyncSession, deployment: Deployment, status: RolloutStatus) -> None:
    key = (deployment.service_id, deployment.environment)
    current = await lookups.instance(session, *key, deployment.track)
    if status.state == "failed":
        if current is not None:  # what ran before keeps running; say why the change failed
            current.state, current.updated_at = "failed", utcnow()
            current.message = f"{deployment.action} to {deployment.version} failed: {status.message}"
            session.add(current)
        return
    if deployment.action == "abort":
        if current is not None:
            await session.delete(current)
        return
    if deployment.action == "undeploy":  # nothing runs on either track now
        for track in ("stable", "canary"):
            if (running := await lookups.instance(session, *key, track)) is not None:
                await session.delete(running)
        await _end_rollouts(session, deployment)
        return
    if deployment.action == "promote":
        canary = await lookups.instance(session, *key, "canary")
        if canary is not None:
            await session.delete(canary)
    runs = deployment.model_dump(
        include={
            "service_id",
            "environment",
            "track",
            "project",
            "service",
            "namespace",
            "version",
            "image",
            "replicas",
            "resources",
            "resource_snapshot",
        }
    )
    runs |= {"deployment_id": deployment.id, "state": status.state, "message": status.message, "updated_at": utcnow()}
    session.add(current.sqlmodel_update(runs) if current else Instance(**runs))


async def _end_rollouts(session: AsyncSession, removal: Deployment) -> None:
    """Rollouts still followed when their workload was removed end as superseded by the removal.
    Their statuses are queued before the removal's own, so a consumer's last word is "removed"."""
    rows = await session.exec(
        select(Deployment)
        .where(Deployment.service_id == removal.service_id, Deployment.environment == removal.environment)
        .where(Deployment.state == "progressing", Deployment.id != removal.id)
    )
    for rollout in rows.all():
        ended = RolloutStatus("failed", rollout.desired, 0, 0, 0, f"superseded by undeploy {removal.id}")
        await record_outcome(session, rollout, ended, touch_track=False)


async def follow_rollout(
    deployment_id: str, *, uow: UnitOfWork, driver: ClusterDriver, timed_out: bool = False
) -> bool:
    """Record a progressing rollout's change, if any; True once it is finished (or gone)."""
    async with uow.sessions() as session:
        deployment = await session.get(Deployment, deployment_id)
    if deployment is None or deployment.state != "progressing":
        return True
    where = (deployment.project, deployment.service, deployment.environment, deployment.namespace)
    try:
        status = await driver.status(*where, track=deployment.track)
    except Exception as exc:  # noqa: BLE001 - unreachable cluster: ask again on the next tick
        log.warning("rollout status unavailable", deployment_id=deployment_id, error=repr(exc))
        if not timed_out:
            return False
        status = None
    if status is None:
        status = RolloutStatus("failed", deployment.replicas, 0, 0, 0, "the workload is gone")
    elif timed_out and status.state == "progressing":
        status = dataclasses.replace(status, state="failed", message=f"rollout not finished in time: {status.message}")
    return await _record_progress(deployment_id, status, uow=uow)


async def _record_progress(deployment_id: str, status: RolloutStatus, *, uow: UnitOfWork) -> bool:
    async with uow.begin() as session:
        deployment = await session.get(Deployment, deployment_id)
        if deployment is None or deployment.state != "progressing":
            return True
        track = await lookups.instance(session, deployment.service_id, deployment.environment, deployment.track)
        superseded_by = track.deployment_id if track is not None else deployment.id
        superseded = superseded_by != deployment.id
        if superseded:
            status = RolloutStatus("failed", status.desired, 0, 0, 0, f"superseded by deployment {superseded_by}")
        unchanged = (status.state, status.current, status.updated, status.available) == (
            deployment.state,
            deployment.current,
            deployment.updated,
            deployment.available,
        )
        if not unchanged:
            await record_outcome(session, deployment, status, touch_track=not superseded)
    return status.state != "progressing"


class RolloutWatcher:
    """Follows progressing rollouts in the background; resumes them after a restart."""

    def __init__(
        self,
        uow: UnitOfWork,
        driver: ClusterDriver,
        *,
        interval: float = FOLLOW_INTERVAL_SECONDS,
        deadline: float = ROLLOUT_DEADLINE_SECONDS,
    ) -> None:
        self.uow, self.driver = uow, driver
        self.interval, self.deadline = interval, deadline
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def follow(self, deployment_id: str) -> None:
        if deployment_id in self._tasks:
            return
        task = asyncio.create_task(self._follow(deployment_id), name=f"rollout-{deployment_id}")
        self._tasks[deployment_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(deployment_id, None))

    async def resume(self) -> None:
        async with self.uow.sessions() as session:
            progressing = select(Deployment.id).where(Deployment.state == "progressing")
            rows = await session.exec(progressing)
            for deployment_id in rows.all():
                self.follow(deployment_id)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, deployment_id: str) -> None:
        give_up_at = time.monotonic() + self.deadline
        while True:
            await asyncio.sleep(self.interval)
            try:
                done = await follow_rollout(
                    deployment_id,
                    uow=self.uow,
                    driver=self.driver,
                    timed_out=time.monotonic() > give_up_at,
                )
            except Exception:  # the database blinked: try again on the next tick
                log.exception("following the rollout failed", deployment_id=deployment_id)
                continue
            if done:
                return
