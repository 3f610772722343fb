"""Secret resource values: masked in every answer, replaced only by a new value, sealed in the
database file, never in an event, and in the cluster only as a Secret (rendered files 0600)."""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.deploy import secrecy
from services.deploy.cluster import WorkloadSpec
from services.deploy.rendered import RenderedManifestsDriver
from shared.errors import InvalidInput
from shared.events import Topic
from shared.outbox import UnitOfWork
from tests.support import ADMIN, token
from tests.unit.test_deploy_api import BASE, DEPLOYER, client, cluster, deployment  # noqa: F401 - the fixtures
from tests.unit.test_deploy_handlers import (
    ENV,
    PROJECT,
    SERVICE,
    FakeCluster,
    announce,
    outbox,
    release,
    uow,  # noqa: F401 - the fixture
    work,
)

RESOURCES = f"/environments/{ENV}/resources"
PASSWORD, TOKEN, LICENSE = "pw-Zq81-never-shown", "tok-Hh27-never-shown", "lic-Mm55-never-shown"
PLAINTEXTS = (PASSWORD, TOKEN, LICENSE)
ORDERS_DB = {
    "name": "orders-db",
    "type": "database",
    "data": {
        "host": "db-a",
        "user": "app",
        "password": PASSWORD,
        "url": f"postgresql://app:{PASSWORD}@db-a:5432/orders",
        "api_token": TOKEN,
        "license": LICENSE,
        "pool": 5,
    },
    "secret": ["license"],
}
SHOWN = {
    "host": "db-a",
    "user": "app",
    "password": "***",
    "url": "postgresql://app:***@db-a:5432/orders",
    "api_token": "***",
    "license": "***",
    "pool": 5,
}


def _clear_of_secrets(text: str | bytes, where: str) -> None:
    raw = text.encode() if isinstance(text, str) else text
    for plaintext in PLAINTEXTS:
        assert plaintext.encode() not in raw, f"{where} holds a secret value"


async def test_secret_values_are_masked_in_every_answer_and_sealed_in_the_database_file(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    await announce(uow)
    await release(uow, "1.0.0")
    created = await client.post(RESOURCES, json=ORDERS_DB, headers=DEPLOYER)
    assert created.status_code == 201, created.text
    assert created.json()["data"] == SHOWN
    assert created.json()["secret"] == ["api_token", "license", "password", "url"]
    assert created.json()["secret_set"] == ["api_token", "license", "password", "url"]

    started = await client.post("/deployments", json=deployment("1.0.0", resources=["orders-db"]), headers=DEPLOYER)
    assert started.status_code == 202, started.text
    await work(uow, cluster)
    applied = cluster.applied[-1].resources["orders-db"]
    assert applied["data"] == ORDERS_DB["data"]  # the worker alone gets the values, from its own store
    assert applied["secret"] == ["api_token", "license", "password", "url"]

    answers = [created]
    for path in (
        RESOURCES,
        f"{RESOURCES}/orders-db",
        f"/deployments/{started.json()['id']}",
        BASE,
        f"{BASE}/deployments",
        "/services",
        f"/services/{PROJECT}/{SERVICE}",
    ):
        answer = await client.get(path, headers=ADMIN)
        assert answer.status_code == 200, (path, answer.text)
        answers.append(answer)
    for answer in answers:
        _clear_of_secrets(answer.text, str(answer.request.url))
    assert (await client.get(f"{RESOURCES}/orders-db", headers=ADMIN)).json()["revisions"][0]["data"] == SHOWN

    for envelope in await outbox(uow, Topic.DEPLOY_REQUESTED) + await outbox(uow, Topic.RESOURCE_CHANGED):
        _clear_of_secrets(envelope.model_dump_json(), envelope.type)
    assert (await outbox(uow, Topic.DEPLOY_REQUESTED))[-1].data["resources"] == {"orders-db": 1}
    files = sorted(tmp_path.glob("deploy.db*"))
    assert files, "the deploy database file"
    for file in files:
        _clear_of_secrets(file.read_bytes(), file.name)
    assert b"postgresql://app:***@db-a:5432/orders" in b"".join(f.read_bytes() for f in files)  # the right file


async def test_a_secret_value_is_replaced_only_by_a_new_value(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await announce(uow)
    await release(uow, "1.0.0", "1.1.0", "1.2.0")
    cache = {"name": "cache", "type": "cache", "data": {"host": "c1", "password": PASSWORD}}
    assert (await client.post(RESOURCES, json=cache, headers=DEPLOYER)).status_code == 201
    path = f"{RESOURCES}/cache"

    async def put(body: dict[str, Any], headers: dict[str, str] = DEPLOYER) -> httpx.Response:
        return await client.put(path, json={"type": "cache"} | body, headers=headers)

    left_out = await put({"data": {"host": "c2"}})
    masked = await put({"data": {"host": "c2", "password": "***"}})
    unknown = await put({"data": {"host": "c2", "password": "new"}, "keep": ["host"]})
    member = await put({"data": {"host": "c2"}, "keep": ["password"]}, headers=token(f"{PROJECT}:project-owner"))
    assert left_out.status_code == 422 and "\"keep\": ['password']" in left_out.json()["detail"]
    assert masked.status_code == 422 and "holds the mask, not a value" in masked.json()["detail"]
    assert unknown.status_code == 422 and "keep names host, which holds no secret value now" in unknown.json()["detail"]
    assert member.status_code == 403

    kept = await put({"data": {"host": "c2"}, "keep": ["password"]})
    same = await put({"data": {"host": "c2"}, "keep": ["password"]})
    assert kept.status_code == 200 and kept.json()["revision"] == 2
    assert same.json()["revision"] == 2  # the same content again makes no revision
    assert kept.json()["data"] == {"host": "c2", "password": "***"}
    await client.post("/deployments", json=deployment("1.0.0", resources=["cache"]), headers=DEPLOYER)
    await work(uow, cluster)
    assert cluster.applied[-1].resources["cache"]["data"] == {"host": "c2", "password": PASSWORD}

    replaced = await put({"data": {"host": "c2", "password": "pw-2"}})
    assert replaced.json()["revision"] == 3
    await client.post("/deployments", json=deployment("1.1.0"), headers=DEPLOYER)
    await work(uow, cluster)
    assert cluster.applied[-1].resources["cache"]["data"]["password"] == "pw-2"

    removed = await put({"data": {"host": "c2"}, "remove": ["password"]})
    assert removed.json()["revision"] == 4
    assert (removed.json()["secret"], removed.json()["secret_set"]) == (["password"], [])
    back = await put({"data": {"host": "c2", "password": "pw-3"}})  # a key once secret stays secret
    assert back.json()["data"]["password"] == "***"


async def test_secret_keys_reach_the_cluster_only_in_the_secret_and_rendered_files_are_0600(tmp_path: Path) -> None:
    spec = WorkloadSpec(
        project=PROJECT,
        service=SERVICE,
        environment=ENV,
        namespace="shop-dev",
        version="1.0.0",
        image="registry.local/shop/orders:1.0.0",
        replicas=1,
        resources={"cfg": {"type": "config", "data": {"level": "info", "license": LICENSE}, "secret": ["license"]}},
    )
    driver = RenderedManifestsDriver(tmp_path)
    await driver.apply(spec)
    [path] = list(tmp_path.rglob("*.yaml"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    objects = {obj["kind"]: obj for obj in yaml.safe_load_all(path.read_text())}
    assert objects["ConfigMap"]["data"] == {"CFG_LEVEL": "info"}
    assert base64.b64decode(objects["Secret"]["data"]["CFG_LICENSE"]).decode() == LICENSE
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": objects["Secret"]["metadata"]["name"]}} in container["envFrom"]


def test_which_keys_are_secret_and_how_they_are_shown() -> None:
    for key in ("password", "DB_PASSWD", "pwd", "client_secret", "apiKey", "api-key", "private_key", "ssh_key"):
        assert secrecy.secret_by_default("config", key, "x"), key
    for key in ("credentials", "auth_token", "keys", "passphrase"):
        assert secrecy.secret_by_default("config", key, "x"), key
    for key in ("host", "keyspace", "monkey", "passenger_count", "region"):
        assert not secrecy.secret_by_default("config", key, "x"), key
    assert secrecy.secret_by_default("database", "url", "postgresql://db/orders")
    assert not secrecy.secret_by_default("queue", "url", "amqp://mq/orders")
    assert secrecy.secret_by_default("queue", "endpoint", "amqp://app:pw@mq/orders")  # userinfo with a password
    assert secrecy.secret_keys("config", {"a": 1, "token": 2}, declared=["b"], inherited=["c"]) == ["b", "c", "token"]
    assert secrecy.mask("postgresql://user:pw@db/x") == "postgresql://user:***@db/x"
    assert secrecy.mask("https://token123@api.example/x") == "https://***@api.example/x"
    assert secrecy.mask(12345) == secrecy.mask("plain") == "***"
    assert secrecy.is_masked("***") and secrecy.is_masked("postgresql://user:***@db/x")
    assert not secrecy.is_masked("postgresql://user:pw@db/x")
    with pytest.raises(InvalidInput, match="sent, kept or removed more than once"):
        secrecy.check_secret_update("r", ["password"], {"password": "new"}, ["password"], [])
