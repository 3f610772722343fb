"""Reads of release's tables inside a caller's session; the ``require_`` ones raise NotFound."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from services.release.models import Binding, Environment, KnownService, KnownVersion, Release, Running
from shared.batches import first_row, holds_write_lock, indexed
from shared.bus import read_ahead, readable_payloads
from shared.db import lock_once
from shared.errors import NotFound
from shared.events import Envelope, VersionCreated


async def lock_service(session: AsyncSession, service_id: str) -> KnownService | None:
    """Serialize use cases that read a service's bindings and versions together (a row write; a
    consumer batch on SQLite holds the database's write lock already)."""
    await _lock_services(session, [service_id])
    return await session.get(KnownService, service_id)


async def _lock_services(session: AsyncSession, ids: list[str]) -> None:
    """The services' rows written (locked until the transaction ends), unless the session holds
    SQLite's write lock. In a consumer's batch a row it locked already is not written again
    (``shared.db.lock_once``): one ``UPDATE`` for the batch, not one more (and one more row
    version) per event."""
    if not ids or holds_write_lock(session):
        return

    async def write_rows(wanted: list[str]) -> None:
        query = update(KnownService).where(col(KnownService.id).in_(wanted))
        await session.exec(query.values(revision=col(KnownService.revision) + 1))

    await lock_once(session, "release: service row locked", ids, write_rows)


async def find_service(session: AsyncSession, project: str, code: str) -> KnownService | None:
    query = select(KnownService).where(KnownService.project == project, KnownService.code == code)
    return (await session.exec(query)).first()


async def require_service(session: AsyncSession, project: str, code: str) -> KnownService:
    service = await find_service(session, project, code)
    if service is None:
        raise NotFound(
            f"service {code!r} of project {project!r} is not known to release yet (it appears "
            "after catalog announces it): check the name, or create it with POST "
            f"/api/catalog/projects/{project}/services"
        )
    return service


async def require_environment(session: AsyncSession, code: str) -> Environment:
    environment = await session.get(Environment, code)
    if environment is None:
        raise NotFound(
            f"environment {code!r} does not exist: an organization admin creates it at "
            "organization level with POST /api/release/environments"
        )
    return environment


async def find_binding(session: AsyncSession, service_id: str, environment: str) -> Binding | None:
    query = select(Binding).where(Binding.service_id == service_id, Binding.environment == environment)
    return (await session.exec(query)).first()


# Built once, values bound at each call: each version.created reads these (``python -m bench.statements``).
_BOUND_ENVIRONMENTS = (
    select(Binding, Environment)
    .join(Environment, col(Binding.environment) == col(Environment.code))
    .where(Binding.service_id == bindparam("service_id"))
    .order_by(col(Binding.id))
)
_VERSION = select(KnownVersion).where(
    KnownVersion.service_id == bindparam("service_id"), KnownVersion.version == bindparam("version")
)


async def bound_environments(session: AsyncSession, service_id: str) -> list[tuple[Binding, Environment]]:
    """The service's bindings with their environments, oldest first; in a batch that read them
    ahead (``prefetch_bindings``), from the session without a statement."""
    bindings = indexed(session, Binding, service_id=service_id)
    if bindings is not None and all(binding.id is not None for binding in bindings):
        found = []
        for binding in sorted(bindings, key=lambda binding: binding.id or 0):
            environment = await session.get(Environment, binding.environment)
            if environment is None:
                break  # not in the session: the database answers
            found.append((binding, environment))
        else:
            return found
    rows = await session.exec(_BOUND_ENVIRONMENTS, params={"service_id": service_id})
    return [(binding, environment) for binding, environment in rows.all()]


async def prefetch_bindings(session: AsyncSession, envelopes: list[Envelope]) -> Sequence[object]:
    """For a batch of ``version.created`` (``shared.bus.with_prefetch``): the services' bindings and
    their environments, two statements for the batch, which ``bound_environments`` then finds."""
    bindings = await _bindings_ahead(session, envelopes)
    codes = sorted({binding.environment for binding in bindings})  # type: ignore[attr-defined]
    if not codes:
        return bindings
    environments = (await session.exec(_ENVIRONMENTS, params={"codes": codes})).all()
    return [*bindings, *environments]


async def lock_services_ahead(session: AsyncSession, envelopes: list[Envelope]) -> Sequence[object]:
    """On PostgreSQL, the batch's services locked (in order) before their bindings and versions are
    read ahead, as each event locks its own before reading them (``lock_service``): a binding made
    meanwhile is then seen. A batch on SQLite holds the write lock already."""
    await _lock_services(session, sorted({data.service_id for data in readable_payloads(envelopes, VersionCreated)}))
    return []


_bindings_ahead = read_ahead(Binding, VersionCreated, locked=True, service_id="service_id")
_ENVIRONMENTS = select(Environment).where(col(Environment.code).in_(bindparam("codes", expanding=True)))


async def find_version(session: AsyncSession, service_id: str, version: str) -> KnownVersion | None:
    """The service's version of that name; in a batch that read them ahead, from the session."""
    return await first_row(session, KnownVersion, _VERSION, service_id=service_id, version=version)


async def versions_newest_first(session: AsyncSession, service_id: str) -> list[KnownVersion]:
    query = select(KnownVersion).where(KnownVersion.service_id == service_id).order_by(col(KnownVersion.id).desc())
    return list((await session.exec(query)).all())


async def history(
    session: AsyncSession, service_id: str, environment: str, limit: int | None = None, before_id: int | None = None
) -> list[Release]:
    """Releases newest first; with ``before_id``, only those older than that release (keyset paging)."""
    query = select(Release).where(Release.service_id == service_id, Release.environment == environment)
    if before_id is not None:
        query = query.where(col(Release.id) < before_id)
    return list((await session.exec(query.order_by(col(Release.id).desc()).limit(limit))).all())


async def latest_release(session: AsyncSession, service_id: str, environment: str) -> Release | None:
    releases = await history(session, service_id, environment, limit=1)
    return releases[0] if releases else None


async def runs_in(session: AsyncSession, service_id: str, environment: str) -> bool:
    query = select(Running.id).where(Running.service_id == service_id, Running.environment == environment)
    return (await session.exec(query.limit(1))).first() is not None


async def released_to(session: AsyncSession, environment: str) -> list[str]:
    """``project/service`` of every service released to the environment."""
    query = (
        select(KnownService.project, KnownService.code)
        .join(Binding, col(Binding.service_id) == col(KnownService.id))
        .where(Binding.environment == environment)
        .order_by(col(KnownService.project), col(KnownService.code))
    )
    return [f"{project}/{code}" for project, code in (await session.exec(query)).all()]


async def running_in(session: AsyncSession, environment: str) -> list[str]:
    """``project/service`` of every service that runs in the environment, by deploy's statuses."""
    query = select(Running.project, Running.service).where(Running.environment == environment).distinct()
    return sorted(f"{project}/{service}" for project, service in (await session.exec(query)).all())
