"""Resources of an environment (organization level): created, revised, read and deleted.

Each create and update is a new revision (``revisions.py``); the revisions are kept, and a
deployment records the revision of each resource it used, so what runs keeps its values until it
is deployed again. A resource that runs somewhere cannot be deleted. Every change is announced
as ``resource.changed`` (its revision, never its values) in the same transaction. Secret values
(``secrecy.py``) are sealed before they are stored (``sealed.py``) and every answer shows them masked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.deploy import domain, sealed, secrecy
from services.deploy.models import (
    Deployment,
    Instance,
    Resource,
    ResourceCreate,
    ResourcePublic,
    ResourceUpdate,
)
from services.deploy.references import require_environment
from services.deploy.revisions import ResourceRevision, ResourceRevisionPublic
from shared.errors import Conflict, NotFound
from shared.events import ResourceChanged, utcnow
from shared.outbox import UnitOfWork, emit
from shared.sealing import Keyring

T = TypeVar("T")
Change = Literal["created", "updated", "deleted"]


class ResourceDetail(ResourcePublic):
    revisions: list[ResourceRevisionPublic]  # oldest first


async def create_resource(
    environment: str,
    data: ResourceCreate,
    *,
    by: str,
    uow: UnitOfWork,
    keyring: Keyring,
    correlation_id: str | None = None,
) -> Resource:
    """Define a resource: its revision 1 (or the next number, when the name was used before)."""
    domain.validate_resource(data.name, data.type, data.data)
    secret = secrecy.secret_keys(data.type, data.data, data.secret)
    stored = sealed.seal_values(keyring, (environment, data.name), data.data, secret)

    async def create(session: AsyncSession) -> Resource:
        await require_environment(session, environment)
        if await _find(session, environment, data.name) is not None:
            raise Conflict(
                f"resource {data.name!r} already exists in environment {environment}: change it with "
                f"PUT /api/deploy/environments/{environment}/resources/{data.name}"
            )
        revision = domain.next_revision(await _last_revision(session, environment, data.name))
        resource = Resource(
            name=data.name,
            type=data.type,
            environment=environment,
            created_by=by,
            revision=revision,
            data=stored.data,
            sealed=stored.sealed,
            secret=stored.secret,
        )
        session.add(resource)
        _revise(session, resource, by=by, change="created", correlation_id=correlation_id)
        return resource

    return await _write(uow, f"resource {data.name!r} in {environment}", create)


async def update_resource(
    environment: str,
    name: str,
    data: ResourceUpdate,
    *,
    by: str,
    uow: UnitOfWork,
    keyring: Keyring,
    correlation_id: str | None = None,
) -> Resource:
    """A new revision with the given type and data; the same content again changes nothing.
    A secret value set now is replaced only by a new value, else kept or removed by name."""
    domain.validate_resource(name, data.type, data.data)

    async def update(session: AsyncSession) -> Resource:
        resource = await _existing(session, environment, name)
        now = sealed.stored_of(resource.data, resource.sealed, resource.secret)
        values_now = sealed.open_values(keyring, (environment, name), now)
        secret_now = now.secret if resource.secret is not None else secrecy.secret_keys(resource.type, values_now)
        secrecy.check_secret_update(name, [k for k in secret_now if k in values_now], data.data, data.keep, data.remove)
        values = {**data.data, **{key: values_now[key] for key in data.keep}}
        domain.validate_resource(name, data.type, values)
        secret = secrecy.secret_keys(data.type, values, data.secret, inherited=secret_now)
        if resource.secret is not None and (resource.type, values_now, secret_now) == (data.type, values, secret):
            return resource
        await _keep_history(session, resource)
        reuse = {key: (values_now[key], token) for key, token in now.sealed.items()}
        resource.sqlmodel_update(_columns(sealed.seal_values(keyring, (environment, name), values, secret, reuse)))
        resource.type = data.type
        resource.revision = domain.next_revision(await _last_revision(session, environment, name))
        resource.updated_at, resource.updated_by = utcnow(), by
        session.add(resource)
        _revise(session, resource, by=by, change="updated", correlation_id=correlation_id)
        return resource

    return await _write(uow, f"resource {name!r} in {environment}", update)


def public(resource: Resource) -> ResourcePublic:
    """The resource as answers show it: secret values masked, which keys are secret and set."""
    view = sealed.public_view(
        resource.type, sealed.stored_of(resource.data, resource.sealed, resource.secret), legacy=resource.secret is None
    )
    return ResourcePublic.model_validate(resource.model_dump(exclude={"data", "secret", "sealed"}) | view)


def _revision_public(revision: ResourceRevision) -> ResourceRevisionPublic:
    stored = sealed.stored_of(revision.data, revision.sealed, revision.secret)
    view = sealed.public_view(revision.type, stored, legacy=revision.secret is None)
    return ResourceRevisionPublic.model_validate(revision.model_dump(exclude={"data", "secret", "sealed"}) | view)


def _columns(stored: sealed.Stored) -> dict[str, Any]:
    return {"data": stored.data, "sealed": stored.sealed, "secret": stored.secret}


async def read_resource(environment: str, name: str, *, uow: UnitOfWork) -> ResourceDetail:
    """The resource as it is now, with every revision of its name, oldest first."""
    async with uow.sessions() as session:
        resource = await _existing(session, environment, name)
        rows = await session.exec(
            select(ResourceRevision)
            .where(ResourceRevision.environment == environment, ResourceRevision.name == name)
            .order_by(col(ResourceRevision.revision))
        )
        revisions = [_revision_public(r) for r in rows.all()]
    if not revisions or revisions[-1].revision != resource.revision:  # made before revisions were kept
        revisions.append(_revision_public(_revision_of(resource, resource.created_by)))
    return ResourceDetail.model_validate(public(resource).model_dump() | {"revisions": revisions})


async def delete_resource(environment: str, name: str, *, uow: UnitOfWork, correlation_id: str | None = None) -> None:
    """Delete a resource no running deployment uses; its revisions stay on record."""
    async with uow.begin() as session:
        resource = await _existing(session, environment, name)
        domain.refuse_deleting_a_used_resource(name, environment, await services_using(session, environment, name))
        await _keep_history(session, resource)
        await session.delete(resource)
        _announce(session, resource, "deleted", correlation_id)


async def services_using(session: AsyncSession, environment: str, name: str) -> list[str]:
    """The services whose running tracks, or deployments under way, use the resource."""
    running = await session.exec(select(Instance).where(Instance.environment == environment))
    in_flight = await session.exec(
        select(Deployment)
        .where(Deployment.environment == environment, Deployment.action != "undeploy")
        .where(col(Deployment.state).in_(domain.IN_FLIGHT_STATES))
    )
    users: list[Instance | Deployment] = [*running.all(), *in_flight.all()]
    return sorted({domain.subject(u.project, u.service) for u in users if name in u.resources})


async def _write(uow: UnitOfWork, what: str, change: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """One change in one transaction; a concurrent change of the same resource is a 409."""
    try:
        async with uow.begin() as session:
            return await change(session)
    except IntegrityError as exc:
        raise Conflict(f"{what} was changed at the same moment by someone else: read it again and retry") from exc


async def _find(session: AsyncSession, environment: str, name: str) -> Resource | None:
    rows = await session.exec(select(Resource).where(Resource.environment == environment, Resource.name == name))
    return rows.first()


async def _existing(session: AsyncSession, environment: str, name: str) -> Resource:
    await require_environment(session, environment)
    resource = await _find(session, environment, name)
    if resource is None:
        raise NotFound(
            f"resource {name!r} does not exist in environment {environment}: see "
            f"GET /api/deploy/environments/{environment}/resources"
        )
    return resource


async def _last_revision(session: AsyncSession, environment: str, name: str) -> int | None:
    rows = await session.exec(
        select(func.max(ResourceRevision.revision)).where(
            ResourceRevision.environment == environment, ResourceRevision.name == name
        )
    )
    highest = rows.first()
    current = await _find(session, environment, name)
    known = [n for n in (highest, current.revision if current else None) if n is not None]
    return max(known) if known else None


async def _keep_history(session: AsyncSession, resource: Resource) -> None:
    """A resource made before revisions were kept gets its current revision recorded first."""
    rows = await session.exec(
        select(ResourceRevision.id).where(
            ResourceRevision.environment == resource.environment,
            ResourceRevision.name == resource.name,
            ResourceRevision.revision == resource.revision,
        )
    )
    if rows.first() is None:
        session.add(_revision_of(resource, resource.created_by))


def _revise(session: AsyncSession, resource: Resource, *, by: str, change: Change, correlation_id: str | None) -> None:
    session.add(_revision_of(resource, by))
    _announce(session, resource, change, correlation_id)


def _revision_of(resource: Resource, by: str) -> ResourceRevision:
    return ResourceRevision(
        environment=resource.environment,
        name=resource.name,
        revision=resource.revision,
        type=resource.type,
        data=dict(resource.data),
        secret=None if resource.secret is None else list(resource.secret),
        sealed=None if resource.sealed is None else dict(resource.sealed),
        created_at=resource.updated_at or resource.created_at,
        created_by=by,
    )


def _announce(session: AsyncSession, resource: Resource, change: Change, correlation_id: str | None) -> None:
    changed = ResourceChanged(
        environment=resource.environment,
        name=resource.name,
        type=resource.type,
        revision=resource.revision,
        change=change,
    )
    emit(session, changed, correlation_id=correlation_id)
