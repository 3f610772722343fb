"""The values a deployment applies, read by the worker from deploy's own store.

``deploy.requested`` names each resource and its revision, never its values: the worker reads
the revision (``resource_revisions``; the resource itself when it was made before revisions were
kept; else the snapshot the deployment recorded) and opens its sealed values just before they go
to the cluster, where secret ones become a Kubernetes Secret (``manifests.py``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import bindparam, tuple_
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.deploy import sealed, secrecy
from services.deploy.models import Deployment, Resource
from services.deploy.revisions import ResourceRevision
from shared.sealing import Keyring


async def values_to_apply(
    session: AsyncSession,
    environment: str,
    deployment_id: str,
    revisions: Mapping[str, int | None],
    keyring: Keyring,
    read: Mapping[RevisionKey, ResourceRevision] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{name: {"type", "data" (in clear), "secret" (the keys held secret)}}`` at the named revisions.

    Raises ``LookupError`` for a revision this database does not hold, ``SealingError`` for a value
    that does not open. ``read``: revisions already read (``revisions_of``), by (environment,
    name, revision); one not there is read here."""
    recorded = await session.get(Deployment, deployment_id)
    snapshot = recorded.resource_snapshot if recorded is not None else {}
    values: dict[str, dict[str, Any]] = {}
    for name, revision in revisions.items():
        type_, stored, legacy = await _stored(session, environment, name, revision, snapshot.get(name), read)
        opened = sealed.open_values(keyring, (environment, name), stored)
        secret = secrecy.secret_keys(type_, opened) if legacy else stored.secret
        values[name] = {"type": type_, "data": opened, "secret": secret}
    return values


_REVISION = select(ResourceRevision).where(  # built once: each deploy request reads it
    ResourceRevision.environment == bindparam("environment"),
    ResourceRevision.name == bindparam("name"),
    ResourceRevision.revision == bindparam("revision"),
)


RevisionKey = tuple[str, str, int]  # environment, resource name, revision
_REVISIONS = select(ResourceRevision).where(  # built once, its keys bound at each call (ADR 12)
    tuple_(ResourceRevision.environment, ResourceRevision.name, ResourceRevision.revision).in_(
        bindparam("keys", expanding=True)
    )
)


async def revisions_of(session: AsyncSession, wanted: Collection[RevisionKey]) -> dict[RevisionKey, ResourceRevision]:
    """The named revisions this database holds, in one statement (a batch of requests reads them
    together before any is applied)."""
    if not wanted:
        return {}
    rows = (await session.exec(_REVISIONS, params={"keys": list(wanted)})).all()
    return {(row.environment, row.name, row.revision): row for row in rows}


async def _stored(
    session: AsyncSession,
    environment: str,
    name: str,
    revision: int | None,
    recorded: Mapping[str, Any] | None,
    read: Mapping[RevisionKey, ResourceRevision] | None = None,
) -> tuple[str, sealed.Stored, bool]:
    """(type, stored values, whether they are from before sealing) of one resource at ``revision``."""
    if revision is not None:
        kept: ResourceRevision | Resource | None = (read or {}).get((environment, name, revision))
        if kept is None:
            rows = await session.exec(
                _REVISION, params={"environment": environment, "name": name, "revision": revision}
            )
            kept = rows.first()
        if kept is None:  # made before revisions were kept: the resource itself, if still at that revision
            current = await session.exec(
                select(Resource).where(Resource.environment == environment, Resource.name == name)
            )
            kept = next((r for r in current.all() if r.revision == revision), None)
        if kept is not None:
            return kept.type, sealed.stored_of(kept.data, kept.sealed, kept.secret), kept.secret is None
    if recorded is not None and "data" in recorded:
        stored = sealed.stored_of(recorded.get("data"), recorded.get("sealed"), recorded.get("secret"))
        return str(recorded.get("type", "")), stored, "secret" not in recorded
    raise LookupError(
        f"resource {name!r} (revision {revision}) of environment {environment} is not in this deploy database: "
        "deploy the service again from the installation that holds its resources"
    )
