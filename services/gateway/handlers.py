"""The gateway's use cases: each one transaction, every route change announced through the outbox."""

from __future__ import annotations

from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.gateway import domain, known_services
from services.gateway.models import (
    Route,
    RouteCreate,
    RouteMatch,
    RouteTableEntry,
    RouteUpdate,
)
from shared.db import serialize_on
from shared.errors import Conflict, NotFound
from shared.events import RouteChanged, utcnow
from shared.logging import get_logger
from shared.outbox import UnitOfWork, emit

log = get_logger(__name__)
READ_ONLY = "built-in routes are read-only"

Change = Literal["created", "updated", "deleted"]


def _announce(session: AsyncSession, route: Route, change: Change, correlation_id: str | None) -> None:
    changed = RouteChanged(
        name=route.name, path=route.path, service=route.service, strip_prefix=route.strip_prefix, change=change
    )
    emit(session, changed, correlation_id=correlation_id)


async def _require_known_target(session: AsyncSession, service: str) -> None:
    known = not domain.is_platform_service(service) and await known_services.is_known(session, service)
    domain.require_known_target(service, known)


async def _refuse_clash(session: AsyncSession, name: str | None, path: str, own_id: int | None) -> None:
    owner = domain.builtin_owning(path)
    if owner is not None and owner.name != name:
        raise Conflict(
            f"path {path!r} lies inside the built-in route {owner.name!r} ({owner.path}): choose another path"
        )
    wanted = [col(Route.path) == path] + ([col(Route.name) == name] if name else [])
    for other in (await session.exec(select(Route).where(or_(*wanted)))).all():
        if other.id == own_id:
            continue
        what = "name" if other.name == name else f"path {path!r}"
        raise Conflict(f"route {other.name!r} already uses this {what}: choose another")


async def create_route(data: RouteCreate, *, by: str, correlation_id: str | None, uow: UnitOfWork) -> Route:
    """Register a route for a service; refused when its name or path is taken."""
    domain.validate_route_name(data.name)
    domain.validate_path(data.path)
    domain.validate_target(data.service)
    route = Route.model_validate(data, update={"created_by": by, "builtin": False})
    try:
        async with uow.begin() as session:
            await _require_known_target(session, data.service)
            await _refuse_clash(session, data.name, data.path, None)
            session.add(route)
            await session.flush()
            _announce(session, route, "created", correlation_id)
    except IntegrityError as exc:
        raise Conflict(f"route {data.name!r} or path {data.path!r} was registered concurrently") from exc
    log.info("route created", route=route.name, path=route.path, target=route.service)
    return route


async def update_route(name: str, data: RouteUpdate, *, correlation_id: str | None, uow: UnitOfWork) -> Route:
    """Change a route's path, target or flags; fields left out keep their value."""
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if "path" in changes:
        domain.validate_path(changes["path"])
    if "service" in changes:
        domain.validate_target(changes["service"])
    try:
        async with uow.begin() as session:
            route = await _writable(session, name)
            if all(getattr(route, field) == value for field, value in changes.items()):
                return route  # nothing to change, nothing to announce
            if changes.get("service", route.service) != route.service:
                await _require_known_target(session, changes["service"])
            if changes.get("path", route.path) != route.path:
                await _refuse_clash(session, None, changes["path"], route.id)
            route.sqlmodel_update({**changes, "updated_at": utcnow()})
            session.add(route)
            _announce(session, route, "updated", correlation_id)
    except IntegrityError as exc:
        raise Conflict(f"path {changes.get('path')!r} was registered concurrently") from exc
    log.info("route updated", route=route.name, path=route.path, target=route.service)
    return route


async def delete_route(name: str, *, correlation_id: str | None, uow: UnitOfWork) -> None:
    async with uow.begin() as session:
        route = await _writable(session, name)
        await session.delete(route)
        _announce(session, route, "deleted", correlation_id)
    log.info("route deleted", route=name)


async def _writable(session: AsyncSession, name: str) -> Route:
    route = (await session.exec(select(Route).where(Route.name == name))).first()
    if route is None:
        raise NotFound(f"route {name!r} does not exist: list them with GET /api/gateway/routes")
    if route.builtin:
        raise Conflict(f"{READ_ONLY}: {name!r} is part of the platform")
    return route


async def get_route(name: str, *, uow: UnitOfWork) -> Route:
    async with uow.sessions() as session:
        route = (await session.exec(select(Route).where(Route.name == name))).first()
    if route is None:
        raise NotFound(f"route {name!r} does not exist: list them with GET /api/gateway/routes")
    return route


async def list_routes(*, uow: UnitOfWork) -> list[Route]:
    async with uow.sessions() as session:
        return list((await session.exec(select(Route).order_by(col(Route.name)))).all())


async def route_table(*, uow: UnitOfWork) -> list[RouteTableEntry]:
    """Every route in match order: the first that matches a request wins."""
    ordered = domain.match_order(await list_routes(uow=uow))
    return [
        RouteTableEntry.model_validate(route, update={"order": index}) for index, route in enumerate(ordered, start=1)
    ]


async def match_path(path: str, *, uow: UnitOfWork) -> RouteMatch:
    table = await route_table(uow=uow)
    entry = domain.resolve(table, path)
    if entry is None:
        raise NotFound(f"no route matches {path!r}: register one with POST /api/gateway/routes")
    return RouteMatch(path=path, route=entry, forward_path=domain.forward_path(entry.path, path, entry.strip_prefix))


async def seed_builtin_routes(*, uow: UnitOfWork) -> int:
    """Insert or refresh the platform's routes; returns how many changed. Instances of the gateway
    starting together take turns, so the second finds the routes the first made."""
    changed = 0
    async with uow.begin() as session:
        await serialize_on(session, "gateway-builtin-routes")
        for builtin in domain.BUILTIN_ROUTES:
            route = (await session.exec(select(Route).where(Route.name == builtin.name))).first()
            wanted = {
                "path": builtin.path,
                "service": builtin.service,
                "strip_prefix": builtin.strip_prefix,
                "retryable": False,
                "builtin": True,
            }
            if route is not None and all(getattr(route, k) == v for k, v in wanted.items()):
                continue
            taken = (await session.exec(select(Route).where(Route.path == builtin.path))).first()
            if taken is not None and taken.name != builtin.name:
                log.warning("built-in route path taken by another route", route=taken.name, path=builtin.path)
                continue
            change: Change = "created" if route is None else "updated"
            route = route or Route.model_validate({"name": builtin.name, "created_by": "gantry", **wanted})
            route.sqlmodel_update({**wanted, "updated_at": utcnow()})
            session.add(route)
            await session.flush()
            _announce(session, route, change, None)
            changed += 1
    return changed
