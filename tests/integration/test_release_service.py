"""The release service in-process against a real broker and database: events in, REST, events out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from services.release.app import create_app
from shared.events import DeployStatus, Envelope, ServiceChanged, ServiceCreated, Topic, VersionCreated, new_event
from shared.settings import Settings
from tests.support import ADMIN, TopicReader, eventually, running, token

pytestmark = pytest.mark.integration


@pytest.fixture
async def publish(service_settings: Settings) -> AsyncIterator:
    producer = AIOKafkaProducer(
        bootstrap_servers=service_settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=service_settings.kafka_idempotence,
    )
    await producer.start()

    async def send(topic: Topic, envelope: Envelope) -> None:
        key = envelope.data["service_id"].encode()
        await producer.send_and_wait(topic.value, envelope.model_dump_json().encode(), key=key)

    yield send
    await producer.stop()


def announce(project: str, code: str) -> Envelope:
    data = ServiceCreated(
        service_id=uuid.uuid4().hex,
        project=project,
        service=code,
        name="Web",
        group="com.acme",
        type="python-fastapi",
        repository_url="file:///web.git",
        repository_web_url="file:///web.git",
        repository_path=f"acme/{code}",
        scm_project_id=f"acme/{code}",
    )
    return new_event(Topic.SERVICE_CREATED, data, source="gantry/catalog", subject=f"{project}/{code}")


def new_version(service: Envelope, version: str, chain: str) -> Envelope:
    data = VersionCreated(
        service_id=service.data["service_id"],
        project=service.data["project"],
        service=service.data["service"],
        version=version,
        sha="b" * 40,
        ref="main",
        pipeline_id=42,
        image=f"registry.local/web:{version}",
    )
    return new_event(
        Topic.VERSION_CREATED,
        data,
        source="gantry/versioning",
        subject=service.subject,
        correlation_id=chain,
    )


def released(service_id: str, **expected: str):
    def match(topic: str, value: dict) -> bool:
        data = value.get("data", {})
        return (
            topic == Topic.VERSION_RELEASED
            and data.get("service_id") == service_id
            and all(data.get(k) == v or value.get(k) == v for k, v in expected.items())
        )

    return match


async def test_release_chain_over_kafka(service_settings: Settings, publish) -> None:
    project, code = f"p{uuid.uuid4().hex[:6]}", "web"
    member = token(f"{project}:project-member", user="alice")
    base = f"/projects/{project}/services/{code}"
    dev, staging = f"dev-{uuid.uuid4().hex[:4]}", f"stg-{uuid.uuid4().hex[:4]}"
    async with (
        running(create_app(service_settings)) as client,
        TopicReader(service_settings.kafka_bootstrap, Topic.VERSION_RELEASED.value) as reader,
    ):
        for env, tier in ((dev, "dev"), (staging, "staging")):
            answer = await client.post("/environments", json={"code": env, "name": env, "tier": tier}, headers=ADMIN)
            assert answer.status_code == 201, answer.text
        again = await client.post("/environments", json={"code": dev, "name": "x", "tier": "dev"}, headers=ADMIN)
        assert again.status_code == 409
        bad = await client.post("/environments", json={"code": "Bad_Env", "name": "x", "tier": "dev"}, headers=ADMIN)
        assert bad.status_code == 422 and "environment code" in bad.json()["detail"]
        forbidden = await client.post("/environments", json={"code": "x", "name": "x", "tier": "dev"}, headers=member)
        assert forbidden.status_code == 403

        missing = await client.get(f"{base}/releases", headers=member)
        assert missing.status_code == 404 and "not known to release yet" in missing.json()["detail"]

        service = announce(project, code)
        service_id = service.data["service_id"]
        await publish(Topic.SERVICE_CREATED, service)

        async def learned():
            answer = await client.get(f"{base}/releases", headers=member)
            return answer if answer.status_code == 200 else None

        overview = (await eventually(learned)).json()
        assert overview == {
            "service_id": service_id,
            "project": project,
            "service": code,
            "enabled": True,
            "auto_release": False,
            "auto_release_refs": ["main"],
            "auto_release_tags": False,
            "environments": [],
        }

        for env in (dev, staging):
            bound = await client.post(f"{base}/releases", json={"environment": env}, headers=member)
            assert bound.status_code == 201, bound.text
            assert bound.json()["latest"] is None  # no version yet: it waits for the next one
        # The guide: "An environment the service is already released to cannot be released to again".
        twice = await client.post(f"{base}/releases", json={"environment": dev}, headers=member)
        assert twice.status_code == 409 and "cannot be released to again" in twice.json()["detail"]
        unknown_env = await client.post(f"{base}/releases", json={"environment": "nowhere"}, headers=member)
        assert unknown_env.status_code == 404
        assert "POST /api/release/environments" in unknown_env.json()["detail"]

        toggled = await client.put(f"{base}/auto-release", json={"enabled": True}, headers=member)
        assert toggled.status_code == 200 and toggled.json()["auto_release"] is True

        chain = f"chain-{uuid.uuid4().hex}"
        await publish(Topic.VERSION_CREATED, new_version(service, "1.0.0", chain))
        for env in (dev, staging):
            event = await reader.wait_for(released(service_id, environment=env, correlation_id=chain))
            assert event["source"] == "gantry/release"
            assert event["data"] | {"environment": None} == {
                "service_id": service_id,
                "project": project,
                "service": code,
                "environment": None,
                "namespace": env,
                "version": "1.0.0",
                "image": "registry.local/web:1.0.0",
                "trigger": "auto",
                "by": "auto-release",
            }

        await client.put(f"{base}/auto-release", json={"enabled": False}, headers=member)
        await publish(Topic.VERSION_CREATED, new_version(service, "1.1.0", f"chain-{uuid.uuid4().hex}"))

        async def version_known():
            answer = await client.post(
                f"{base}/releases/{dev}/versions",
                json={"version": "1.1.0"},
                headers={**member, "x-correlation-id": "req-manual-1"},
            )
            return answer if answer.status_code == 201 else None

        manual = (await eventually(version_known)).json()
        assert (manual["version"], manual["trigger"], manual["by"]) == ("1.1.0", "manual", "alice")
        event = await reader.wait_for(released(service_id, correlation_id="req-manual-1"))
        assert event["data"]["environment"] == dev and event["data"]["by"] == "alice"

        history = await client.get(f"{base}/releases/{dev}/versions", headers=member)
        assert [(r["version"], r["trigger"]) for r in history.json()] == [
            ("1.1.0", "manual"),
            ("1.0.0", "auto"),
        ]
        assert f"namespace: {dev}" in history.json()[0]["deployment_files"]
        overview = (await client.get(f"{base}/releases", headers=member)).json()
        latest = {t["environment"]: t["latest"]["version"] for t in overview["environments"]}
        assert latest == {dev: "1.1.0", staging: "1.0.0"}
        assert not [
            e
            for e in reader.of_type(Topic.VERSION_RELEASED)
            if e["data"]["version"] == "1.1.0" and e["data"]["environment"] == staging
        ]  # auto-release was off for 1.1.0

        outsider = await client.get(f"{base}/releases", headers=token("other:project-member"))
        assert outsider.status_code == 403


def lifecycle_event(service: Envelope, topic: Topic, **fields: object) -> Envelope:
    ids = {k: service.data[k] for k in ("service_id", "project", "service")}
    model = {Topic.DEPLOY_STATUS: DeployStatus, Topic.SERVICE_CHANGED: ServiceChanged}[topic]
    return new_event(topic, model.model_validate(ids | fields), source="gantry/test", subject=service.subject)


def status(service: Envelope, environment: str, state: str) -> Envelope:
    fields = {"deployment_id": "d1", "environment": environment, "version": "1", "state": state, "desired": 1}
    return lifecycle_event(service, Topic.DEPLOY_STATUS, **fields)


async def test_lifecycle_over_kafka(service_settings: Settings, publish) -> None:
    """Where a service runs (deploy.status) and whether it is enabled (service.changed) decide
    what may be un-released and released; environments and withdrawals are announced."""
    project, code = f"p{uuid.uuid4().hex[:6]}", "web"
    member = token(f"{project}:project-member", user="alice")
    base = f"/projects/{project}/services/{code}"
    env = f"stg-{uuid.uuid4().hex[:4]}"
    topics = (Topic.ENVIRONMENT_CHANGED.value, Topic.RELEASE_WITHDRAWN.value)
    async with (
        running(create_app(service_settings)) as client,
        TopicReader(service_settings.kafka_bootstrap, *topics) as reader,
    ):
        created = await client.post("/environments", json={"code": env, "name": "S", "tier": "staging"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        service = announce(project, code)
        await publish(Topic.SERVICE_CREATED, service)

        async def released():
            answer = await client.post(f"{base}/releases", json={"environment": env}, headers=member)
            return answer if answer.status_code == 201 else None

        assert (await eventually(released)).json()["version_choice"].startswith("no version goes there yet")
        await publish(Topic.DEPLOY_STATUS, status(service, env, "succeeded"))

        async def in_use(running: bool):  # a refused deletion says what uses the environment
            answer = await client.delete(f"/environments/{env}", headers=ADMIN)
            assert answer.status_code == 409, answer.text
            return answer if ("running there" in answer.json()["detail"]) is running else None

        await eventually(lambda: in_use(running=True))
        refused = await client.delete(f"{base}/releases/{env}", headers=member)
        assert refused.status_code == 409 and "undeploy it first" in refused.json()["detail"]
        await publish(Topic.DEPLOY_STATUS, status(service, env, "removed"))

        await eventually(lambda: in_use(running=False))
        answer = await client.delete(f"{base}/releases/{env}", headers={**member, "x-correlation-id": "req-w"})
        assert answer.status_code == 204, answer.text
        event = await reader.wait_for(
            lambda topic, value: topic == Topic.RELEASE_WITHDRAWN and value["correlation_id"] == "req-w"
        )
        assert (event["data"]["environment"], event["data"]["by"]) == (env, "alice")

        await publish(
            Topic.SERVICE_CHANGED,
            lifecycle_event(service, Topic.SERVICE_CHANGED, name="Web", enabled=False, change="disabled"),
        )

        async def disabled():
            answer = await client.get(f"{base}/releases", headers=member)
            return answer if answer.json()["enabled"] is False else None

        await eventually(disabled)
        refused = await client.post(f"{base}/releases", json={"environment": env}, headers=member)
        assert refused.status_code == 409 and "is disabled" in refused.json()["detail"]
        assert (await client.delete(f"/environments/{env}", headers=ADMIN)).status_code == 204
        for change in ("created", "deleted"):
            announced = await reader.wait_for(
                lambda topic, value, change=change: (
                    topic == Topic.ENVIRONMENT_CHANGED
                    and value["data"]["code"] == env
                    and value["data"]["change"] == change
                )
            )
            assert announced["data"]["namespace"] == env
