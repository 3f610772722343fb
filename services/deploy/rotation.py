"""Every stored secret value sealed under the current key: at the deploy service's start, and by
``gantry secrets rotate``.

A value sealed under an old key (``GANTRY_ENCRYPTION_OLD_KEYS``) is opened and sealed again under
``GANTRY_ENCRYPTION_KEY``; a row from before values were sealed has its secret values sealed for
the first time. Resources, their revisions and the snapshots deployments, tracks and the last
choices keep are all covered, in one transaction. One value (in one place) gets one new sealed
form wherever it is stored, so a snapshot still compares equal to the revision it copied.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.deploy import sealed, secrecy
from services.deploy.models import DEPLOY_TABLES, Deployment, Instance, Resource, ResourceChoice
from services.deploy.revisions import ResourceRevision
from shared.db import create_tables, make_engine, serialize_on, session_factory
from shared.logging import get_logger
from shared.outbox import OUTBOX_TABLES, UnitOfWork
from shared.sealing import Keyring, keyring_of, sealed_key_id
from shared.service import Runtime
from shared.settings import Settings

log = get_logger(__name__)
LOCK = "gantry-deploy-sealing"
# the tables that keep copies of resources' values, and their column
SNAPSHOTS: tuple[tuple[type[SQLModel], str], ...] = (
    (Deployment, "resource_snapshot"),
    (Instance, "resource_snapshot"),
    (ResourceChoice, "snapshot"),
)


@dataclass
class Resealed:
    """What a pass did: under which key, how many values it sealed, in how many rows."""

    key_id: str
    values: int = 0
    rows: int = 0
    _memo: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)


@asynccontextmanager
async def sealing(runtime: Runtime) -> AsyncIterator[None]:
    """The deploy service's keyring; stored values not under its current key are sealed again first."""
    keyring = keyring_of(runtime.settings)
    done = await reseal_stored(runtime.uow, keyring)
    if done.values:
        log.info("secret values sealed under the current key", key_id=done.key_id, values=done.values, rows=done.rows)
    sealed.KEYRING.provide(runtime, keyring)
    yield


async def rotate_database(settings: Settings) -> Resealed:
    """``gantry secrets rotate``: the deploy database's values sealed again under the current key."""
    engine = make_engine("deploy", settings)
    try:
        await create_tables(engine, "deploy", [*OUTBOX_TABLES, *DEPLOY_TABLES])
        return await reseal_stored(UnitOfWork(session_factory(engine), source="gantry/deploy"), keyring_of(settings))
    finally:
        await engine.dispose()


async def reseal_stored(uow: UnitOfWork, keyring: Keyring) -> Resealed:
    """Seal again every stored value not under the current key (see the module doc)."""
    done = Resealed(keyring.current_id)
    async with uow.begin() as session:
        await serialize_on(session, LOCK)
        for table in (Resource, ResourceRevision):
            for row in await _all(session, table):
                assert isinstance(row, Resource | ResourceRevision)
                stored = sealed.stored_of(row.data, row.sealed, row.secret)
                again = _reseal(done, keyring, (row.environment, row.name), row.type, stored, row.secret is None)
                if again is not None:
                    row.data, row.sealed, row.secret = again.data, again.sealed, again.secret
                    _changed(session, done, row)
        for owner, column in (
            (Deployment, "resource_snapshot"),
            (Instance, "resource_snapshot"),
            (ResourceChoice, "snapshot"),
        ):
            for row in await _all(session, owner):
                snapshot = _reseal_snapshot(done, keyring, cast(Any, row).environment, getattr(row, column))
                if snapshot is not None:
                    setattr(row, column, snapshot)
                    _changed(session, done, row)
    return done


async def _all(session: AsyncSession, table: type[SQLModel]) -> list[SQLModel]:
    return list((await session.exec(select(table))).all())


def _changed(session: AsyncSession, done: Resealed, row: SQLModel) -> None:
    session.add(row)
    done.rows += 1


def _reseal_snapshot(
    done: Resealed, keyring: Keyring, environment: str, snapshot: Mapping[str, Any]
) -> dict[str, Any] | None:
    """A deployment's (track's, choice's) snapshot with its values sealed again; None when unchanged."""
    changed, result = False, dict(snapshot)
    for name, body in snapshot.items():
        if not isinstance(body, dict) or "data" not in body:  # recorded from an event: names and revisions only
            continue
        stored = sealed.stored_of(body.get("data"), body.get("sealed"), body.get("secret"))
        again = _reseal(done, keyring, (environment, name), str(body.get("type", "")), stored, "secret" not in body)
        if again is not None:
            result[name] = body | {"data": again.data, "sealed": again.sealed, "secret": again.secret}
            changed = True
    return result if changed else None


def _reseal(
    done: Resealed, keyring: Keyring, where: tuple[str, str], type_: str, stored: sealed.Stored, legacy: bool
) -> sealed.Stored | None:
    """The stored parts with every secret value under the current key; None when they already are."""
    if not legacy and all(sealed_key_id(token) == keyring.current_id for token in stored.sealed.values()):
        return None
    values = sealed.open_values(keyring, where, stored)
    secret = secrecy.secret_keys(type_, values) if legacy else stored.secret
    tokens: dict[str, str] = {}
    for key in (k for k in secret if k in values):
        context = sealed.context(*where, key)
        memo = (context, json.dumps(values[key], sort_keys=True))
        if memo not in done._memo:
            done._memo[memo] = keyring.seal(memo[1], context=context)
            done.values += 1
        tokens[key] = done._memo[memo]
    return sealed.Stored(data=secrecy.shown(values, secret), sealed=tokens, secret=list(secret))
