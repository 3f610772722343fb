"""The gateway's routes, as deploy keeps them (``gateway.route.changed``): what each service's
Ingress is rendered from. Deploy keeps every route, whichever its target; only those naming a
service deploy runs (by id or 'project/service') ever reach an Ingress."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import bindparam
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import UtcDateTime
from shared.events import RouteChanged, utcnow


class KnownRoute(SQLModel, table=True):
    __tablename__ = "deploy_routes"
    name: str = Field(primary_key=True, max_length=64)
    path: str = Field(max_length=255)
    service: str = Field(max_length=128, index=True)  # the target, as the gateway names it
    strip_prefix: bool = True
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


async def record_route(session: AsyncSession, changed: RouteChanged) -> set[str]:
    """Keep the route as announced (forget a deleted one); the targets whose Ingress it changes:
    the one it leads to now, and the one it led to before when it moved."""
    known = await session.get(KnownRoute, changed.name)
    targets = {changed.service} | ({known.service} if known is not None else set())
    if changed.change == "deleted":
        if known is not None:
            await session.delete(known)
        return targets
    fields = changed.model_dump(include={"name", "path", "service", "strip_prefix"}) | {"updated_at": utcnow()}
    session.add(known.sqlmodel_update(fields) if known is not None else KnownRoute(**fields))
    return targets


async def routes_to(session: AsyncSession, targets: Collection[str]) -> list[KnownRoute]:
    """The routes leading to any of ``targets`` (service ids and 'project/service' names), by name."""
    return list((await session.exec(_ROUTES_TO, params={"targets": sorted(targets)})).all())


_ROUTES_TO = (  # built once: each deployment's Ingress sync reads it (``python -m bench.statements``)
    select(KnownRoute)
    .where(col(KnownRoute.service).in_(bindparam("targets", expanding=True)))
    .order_by(col(KnownRoute.name))
)
