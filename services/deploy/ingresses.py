"""Each service's Ingress kept in step with its routes, wherever the service runs.

An Ingress is (re)applied through the cluster driver when the service is deployed (any deploy
request applied), when one of its routes is created, changed or deleted (``gateway.route.changed``,
for every environment the service runs in), and when an environment's Ingress settings change.
It is always rendered whole from deploy's tables (routes, environments, what runs where), so
applying it again is harmless, and a service that runs nowhere in an environment has none there.

The route is recorded (with the inbox claim) before the cluster is touched: a cluster that
refuses or cannot be reached is logged, and the Ingress is put right by the service's next
deployment or route change. One lock keeps two syncs from applying stale states out of order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import NamedTuple

from sqlalchemy import bindparam
from sqlmodel import and_, col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.deploy import domain, routes
from services.deploy.cluster import CLUSTER, ClusterDriver
from services.deploy.domain import subject
from services.deploy.environments import KnownEnvironment, find_environments
from services.deploy.ingress import IngressSpec, RouteRule
from services.deploy.models import Instance
from shared.events import Envelope, RouteChanged
from shared.logging import get_logger
from shared.outbox import UnitOfWork, claim_inbox
from shared.service import Part, Runtime

log = get_logger(__name__)


class Where(NamedTuple):
    """A service in one environment (and that environment's namespace)."""

    service_id: str
    project: str
    service: str
    environment: str
    namespace: str

    @classmethod
    def of(cls, placed: object) -> Where:
        """From anything placed: an ``Instance``, a ``Deployment``."""
        return cls(*(getattr(placed, field) for field in cls._fields))


_RUNNING = (  # built once: the Ingress sync after each batch of deployments reads it
    select(Instance.service_id, Instance.environment)
    .where(col(Instance.service_id).in_(bindparam("service_ids", expanding=True)))
    .where(col(Instance.environment).in_(bindparam("environments", expanding=True)))
    .distinct()
)


async def ingress_specs(session: AsyncSession, places: Sequence[Where]) -> list[IngressSpec]:
    """The Ingress each service should have in its environment (its routes while anything runs
    there), in order, read in three statements however many there are (the routes to the services,
    what runs where, the environments); in one when no route leads to any of them (most services:
    each has no Ingress, whatever runs and wherever)."""
    if not places:
        return []
    targets = {target for where in places for target in (where.service_id, subject(where.project, where.service))}
    found = await routes.routes_to(session, targets)
    if not found:
        return [_spec(where, None, ()) for where in places]
    service_ids = sorted({where.service_id for where in places})
    codes = sorted({where.environment for where in places})
    rows = await session.exec(_RUNNING, params={"service_ids": service_ids, "environments": codes})
    running = {(service_id, environment) for service_id, environment in rows.all()}
    known = await find_environments(session, codes)
    specs = []
    for where in places:
        environment = known.get(where.environment)
        leading = (
            [r for r in found if domain.serves_target(r.service, where.service_id, where.project, where.service)]
            if (where.service_id, where.environment) in running
            else []
        )
        specs.append(_spec(where, environment, tuple(RouteRule(r.name, r.path, r.strip_prefix) for r in leading)))
    return specs


def _spec(where: Where, environment: KnownEnvironment | None, leading: tuple[RouteRule, ...]) -> IngressSpec:
    return IngressSpec(
        project=where.project,
        service=where.service,
        environment=where.environment,
        namespace=where.namespace,
        ingress_class=environment.ingress_class if environment else None,
        host=environment.ingress_host if environment else None,
        routes=leading,
    )


async def placements_of(session: AsyncSession, targets: Collection[str]) -> list[Where]:
    """Where the services that route targets name (by id or 'project/service') run."""
    by_name = [
        and_(Instance.project == p, Instance.service == s) for p, s in (t.split("/", 1) for t in targets if "/" in t)
    ]
    rows = (await session.exec(select(Instance).where(or_(col(Instance.service_id).in_(targets), *by_name)))).all()
    return _distinct(
        i for i in rows if any(domain.serves_target(t, i.service_id, i.project, i.service) for t in targets)
    )


async def placements_in(session: AsyncSession, environment: str) -> list[Where]:
    """Every service that runs in ``environment``."""
    return _distinct((await session.exec(select(Instance).where(Instance.environment == environment))).all())


def _distinct(instances: Iterable[Instance]) -> list[Where]:
    return sorted({Where.of(instance) for instance in instances})  # a service's tracks share one Ingress


class Ingresses:
    def __init__(self, uow: UnitOfWork, driver: ClusterDriver) -> None:
        self.uow, self.driver = uow, driver
        self._lock = asyncio.Lock()

    async def sync_all(self, places: Iterable[Where]) -> None:
        """Render each place's Ingress from the tables (read once for all of them), and apply each;
        one the cluster refuses is logged and does not stop the others."""
        distinct = list(dict.fromkeys(places))
        async with self._lock:
            async with self.uow.sessions() as session:
                specs = await ingress_specs(session, distinct)
            for spec in specs:
                try:
                    await self.driver.apply_ingress(spec)
                except Exception:  # the cluster refused or is away: the next deployment or route change retries
                    log.exception("ingress not applied", service_code=spec.service, environment=spec.environment)
                    continue
                log.info(
                    "ingress applied", service_code=spec.service, environment=spec.environment, routes=len(spec.routes)
                )

    async def sync_targets(self, targets: Collection[str]) -> None:
        """Every Ingress the services named by route targets have, wherever they run."""
        async with self.uow.sessions() as session:
            found = await placements_of(session, targets)
        await self.sync_all(found)

    async def sync_environment(self, environment: str) -> None:
        """Every Ingress of one environment (its class or host may have changed)."""
        async with self.uow.sessions() as session:
            found = await placements_in(session, environment)
        await self.sync_all(found)


async def on_route_changed(envelope: Envelope, *, uow: UnitOfWork, ingresses: Ingresses) -> None:
    """Keep the route, then re-apply the Ingress of its service (before and after a move) everywhere it runs."""
    changed = envelope.payload(RouteChanged)
    async with uow.begin() as session:
        if not await claim_inbox(session, envelope):
            return
        targets = await routes.record_route(session, changed)
    log.info("route recorded", route=changed.name, target=changed.service, change=changed.change)
    await ingresses.sync_targets(targets)


INGRESSES: Part[Ingresses] = Part("ingresses")


@asynccontextmanager
async def ingress_sync(runtime: Runtime) -> AsyncIterator[None]:
    """The service's one ``Ingresses``, on the cluster driver the ``_cluster`` extension chose."""
    INGRESSES.provide(runtime, Ingresses(runtime.uow, CLUSTER.of(runtime)))
    yield
