"""Undeploy: take a service's workload out of an environment's cluster.

It goes the way of every deploy action: a deployment row with action ``undeploy`` and its
``deploy.requested`` in one transaction; the worker asks the cluster driver to remove the
service's objects (both tracks, its Service and Ingress) and reports ``deploy.status`` with
state ``removed``. Afterwards nothing runs on either track, the resources it used may be deleted,
and the next deployment starts afresh: made by hand (auto-deploy waits for it), with one replica
unless told otherwise, offering the resources chosen last time.
"""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from services.deploy import domain, lookups
from services.deploy.handlers import Action, _act, _deployment
from services.deploy.models import Deployment
from shared.outbox import UnitOfWork


async def undeploy(act: Action, *, uow: UnitOfWork) -> Deployment:
    """Remove the workload of the service from the environment's cluster."""

    async def make(session: AsyncSession) -> Deployment:
        release = await lookups.service_in(session, act.project, act.service, act.environment)
        key = (release.service_id, act.environment)
        latest = await lookups.latest_deployment(session, *key)
        what = domain.subject(act.project, act.service)
        domain.require_workload_to_remove(what, act.environment, (latest.action, latest.state) if latest else None)
        stable = await lookups.instance(session, *key, "stable")
        origin = stable or await lookups.instance(session, *key, "canary") or latest
        assert origin is not None  # require_workload_to_remove: there was a deployment
        return _deployment(
            origin,
            version=origin.version,
            image=origin.image,
            replicas=origin.replicas,
            action="undeploy",
            track="stable",
            resources=origin.resources,
            snapshot=origin.resource_snapshot,
            by=act.by,
            correlation_id=act.correlation_id,
        )

    return await _act(uow, act.request_key, make)
