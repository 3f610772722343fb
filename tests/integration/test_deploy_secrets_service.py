"""Secret resource values through the running deploy service, on a real broker and database: no
value in any answer, in any event on the topics, in any log line, or in the database's bytes (the
SQLite files, or PostgreSQL's rows read raw); the rendered manifests hold them only in a Secret."""

from __future__ import annotations

import base64
import stat
import uuid

import asyncpg
import httpx
import pytest
import yaml

from services.deploy.app import create_app
from services.deploy.rendered import RenderedManifestsDriver
from shared.events import ALL_TOPICS
from shared.settings import Settings
from tests.integration.conftest import Publish, released
from tests.support import ADMIN, TopicReader, eventually, running, token

pytestmark = pytest.mark.integration

DEPLOYER = token("deploy-admin", user="dora")
PASSWORD, LICENSE = f"pw-{uuid.uuid4().hex}", f"lic-{uuid.uuid4().hex}"
PLAINTEXTS = (PASSWORD, LICENSE)
MASKED_URL = "postgresql://app:***@db-a:5432/orders"


def _clear(text: str | bytes, where: str) -> None:
    raw = text if isinstance(text, bytes) else text.encode()
    for plaintext in PLAINTEXTS:
        assert plaintext.encode() not in raw, f"a secret value in {where}"


async def test_no_secret_value_in_answers_events_logs_or_the_database(
    service_settings: Settings, publish: Publish, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = service_settings.model_copy(update={"log_level": "debug"})
    project, service, service_id = "shop", f"orders-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    env = f"e{uuid.uuid4().hex[:6]}"
    base = f"/environments/{env}/projects/{project}/services/{service}"
    data = {"host": "db-a", "password": PASSWORD, "url": f"postgresql://app:{PASSWORD}@db-a:5432/orders"}
    resource = {"name": "orders-db", "type": "database", "data": data | {"license": LICENSE}, "secret": ["license"]}
    assert settings.kafka_bootstrap is not None

    async with TopicReader(settings.kafka_bootstrap, *ALL_TOPICS) as reader, running(create_app(settings)) as client:
        await publish(released(service_id, project, service, "1.0.0", env))
        await eventually(lambda: _answers(client, base))
        answers = [await client.post(f"/environments/{env}/resources", json=resource, headers=DEPLOYER)]
        assert answers[0].status_code == 201, answers[0].text
        assert answers[0].json()["data"]["url"] == MASKED_URL
        kept = {"type": "database", "data": {"host": "db-a", "pool": 5}, "keep": ["password", "url", "license"]}
        answers.append(await client.put(f"/environments/{env}/resources/orders-db", json=kept, headers=DEPLOYER))
        assert answers[-1].json()["revision"] == 2, answers[-1].text
        body = {"project": project, "service": service, "environment": env, "version": "1.0.0"}
        started = await client.post("/deployments", json=body | {"resources": ["orders-db"]}, headers=DEPLOYER)
        assert started.status_code == 202, started.text
        deployment_id = started.json()["id"]
        await reader.wait_for(lambda t, v: t == "deploy.status" and v["data"].get("deployment_id") == deployment_id)
        requested = await reader.wait_for(lambda t, v: t == "deploy.requested" and v["data"]["service"] == service)
        assert requested["data"]["resources"] == {"orders-db": 2}
        for path in (f"/environments/{env}/resources", f"/environments/{env}/resources/orders-db", base):
            answers.append(await client.get(path, headers=ADMIN))
        answers.append(await client.get(f"/services/{project}/{service}", headers=ADMIN))
        answers.append(await client.get(f"/deployments/{deployment_id}", headers=ADMIN))
        for answer in answers:
            assert answer.status_code < 300, answer.text
            _clear(answer.text, str(answer.request.url))
        for topic, _key, value in reader.records:
            _clear(str(value), f"an event on {topic}")
        await _database_is_clear(settings)

    logs = capfd.readouterr()
    assert '"deploy request applied"' in logs.err  # the service's JSON log lines were captured
    _clear(logs.out + logs.err, "the logs")
    _rendered_secret_only_in_a_0600_secret(settings, project, service, env)


async def _answers(client: httpx.AsyncClient, path: str) -> bool:
    return (await client.get(path, headers=ADMIN)).status_code == 200


async def _database_is_clear(settings: Settings) -> None:
    if settings.database_url is None:
        files = sorted(settings.home.glob("deploy.db*"))
        raw = b"".join(file.read_bytes() for file in files)
    else:  # every row of every deploy table, as PostgreSQL returns it
        connection = await asyncpg.connect(settings.database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            tables = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'deploy'")
            rows = [await connection.fetch(f'SELECT * FROM deploy."{t["tablename"]}"') for t in tables]
        finally:
            await connection.close()
        raw = repr([dict(row) for found in rows for row in found]).encode()
    assert MASKED_URL.encode() in raw  # the resource is there, masked
    _clear(raw, "the deploy database")


def _rendered_secret_only_in_a_0600_secret(settings: Settings, project: str, service: str, env: str) -> None:
    path = RenderedManifestsDriver(settings.home / "manifests").path(project, service, env, f"{project}-{env}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    objects = {obj["kind"]: obj for obj in yaml.safe_load_all(path.read_text())}
    _clear(yaml.safe_dump(objects["ConfigMap"]), "the ConfigMap")
    assert base64.b64decode(objects["Secret"]["data"]["ORDERS_DB_PASSWORD"]).decode() == PASSWORD
    assert objects["ConfigMap"]["data"]["ORDERS_DB_POOL"] == "5"
