"""Rotating the sealing key: every stored secret value sealed again under the new key, every value
still readable, values stored in clear before sealing sealed too; ``gantry secrets rotate``."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import pytest
from sqlmodel import select

from gantry.cli import main
from services.deploy import handlers, resource_values, rotation
from services.deploy.models import DEPLOY_TABLES, Deployment, Instance, Resource, ResourceChoice, ResourceCreate
from services.deploy.revisions import ResourceRevision
from shared.db import create_tables, make_engine, session_factory
from shared.outbox import OUTBOX_TABLES, UnitOfWork
from shared.sealing import PREFIX, Keyring, key_id
from shared.settings import Settings
from tests.support import SECRET
from tests.unit.test_deploy_handlers import (
    ENV,
    FakeCluster,
    cluster,  # noqa: F401 - the fixture
    deploy,
    release,
    uow,  # noqa: F401 - the fixture
)
from tests.unit.test_deploy_handlers import work as work_with_test_keyring

OLD, NEW = os.urandom(32), os.urandom(32)
PASSWORD = "pw-Rt44-rotated"


async def _define(into: UnitOfWork, keyring: Keyring, name: str = "orders-db", password: str = PASSWORD) -> None:
    data = {"host": "db-a", "password": password, "url": f"postgresql://app:{password}@db-a/orders"}
    body = ResourceCreate(name=name, type="database", data=data)
    await handlers.create_resource(ENV, body, by="ops", uow=into, keyring=keyring)


async def _key_ids(of: UnitOfWork) -> set[str]:
    """The key id of every sealed value anywhere in deploy's tables."""
    found: set[str] = set()
    async with of.sessions() as session:
        for table in (Resource, ResourceRevision, Deployment, Instance, ResourceChoice):
            for row in (await session.exec(select(table))).all():
                text = row.model_dump_json()
                found |= {part.split(":", 1)[0] for part in text.split(PREFIX)[1:]}
    return found


async def test_rotation_reseals_every_stored_value_and_keeps_every_value_readable(
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    old = Keyring(OLD)
    await release(uow, "1.0.0", "1.1.0")
    await _define(uow, old)
    first = await deploy(uow, "1.0.0", resources=["orders-db"])
    assert await _key_ids(uow) == {key_id(OLD)}

    rotated = Keyring(NEW, (OLD,))
    done = await rotation.reseal_stored(uow, rotated)
    assert done.key_id == key_id(NEW) and done.values == 2  # password and url, each sealed once
    assert done.rows >= 3  # the resource, its revision, the deployment, the last choice
    assert await _key_ids(uow) == {key_id(NEW)}
    assert (await rotation.reseal_stored(uow, rotated)).values == 0  # nothing left under the old key

    async with uow.sessions() as session:  # the new key alone opens every value
        values = await resource_values.values_to_apply(session, ENV, first.id, {"orders-db": 1}, Keyring(NEW))
    assert values["orders-db"]["data"]["password"] == PASSWORD
    # one value, one new sealed form everywhere: the database guard sees no change after a rotation
    later = await deploy(uow, "1.1.0")
    assert later.resources == ["orders-db"]


async def test_values_stored_in_clear_before_sealing_are_sealed(uow: UnitOfWork) -> None:  # noqa: F811
    await release(uow, "1.0.0")
    async with uow.begin() as session:  # as an older Gantry stored it: no secret, no sealed
        session.add(
            Resource(environment=ENV, name="old-db", type="database", data={"password": PASSWORD}, created_by="x")
        )
    done = await rotation.reseal_stored(uow, Keyring(NEW))
    assert done.values == 1
    async with uow.sessions() as session:
        row = (await session.exec(select(Resource).where(Resource.name == "old-db"))).one()
    assert row.data == {"password": "***"} and row.secret == ["password"]
    assert PASSWORD not in json.dumps(row.model_dump(mode="json"))


def test_gantry_secrets_rotate_reseals_the_deploy_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(home=tmp_path, secret=SECRET)

    async def define_under_the_old_key() -> None:
        engine = make_engine("deploy", settings)
        await create_tables(engine, "deploy", [*OUTBOX_TABLES, *DEPLOY_TABLES])
        deploy_db = UnitOfWork(session_factory(engine), source="gantry/deploy")
        await release(deploy_db, "1.0.0")
        await _define(deploy_db, Keyring(OLD))
        await engine.dispose()

    asyncio.run(define_under_the_old_key())
    monkeypatch.setenv("GANTRY_HOME", str(tmp_path))
    monkeypatch.setenv("GANTRY_SECRET", SECRET)
    monkeypatch.setenv("GANTRY_ENCRYPTION_KEY", base64.b64encode(NEW).decode())

    assert main(["secrets", "rotate"]) == 1  # the old key is not configured: nothing changes
    refused = capsys.readouterr().err
    assert f"sealed with key {key_id(OLD)}" in refused and "GANTRY_ENCRYPTION_OLD_KEYS" in refused

    monkeypatch.setenv("GANTRY_ENCRYPTION_OLD_KEYS", OLD.hex())
    assert main(["secrets", "rotate"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"key_id": key_id(NEW), "values_sealed": 2, "rows_changed": 2}

    async def opened_with_the_new_key_alone() -> str:
        engine = make_engine("deploy", settings)
        deploy_db = UnitOfWork(session_factory(engine), source="gantry/deploy")
        async with deploy_db.sessions() as session:
            values = await resource_values.values_to_apply(session, ENV, "none", {"orders-db": 1}, Keyring(NEW))
        await engine.dispose()
        return str(values["orders-db"]["data"]["password"])

    assert asyncio.run(opened_with_the_new_key_alone()) == PASSWORD


async def test_the_test_keyring_is_what_a_service_with_the_test_secret_uses(
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    from shared.sealing import keyring_of
    from tests.support import KEYRING

    assert keyring_of(Settings(secret=SECRET)) == KEYRING
    await release(uow, "1.0.0")
    await _define(uow, KEYRING)
    await deploy(uow, "1.0.0", resources=["orders-db"])
    await work_with_test_keyring(uow, cluster)
    assert cluster.applied[-1].resources["orders-db"]["data"]["password"] == PASSWORD
