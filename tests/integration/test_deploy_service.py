"""The deploy service in-process on a real broker and database: released versions in, a manual
deployment and an auto-deployment out, manifests rendered on disk."""

from __future__ import annotations

import uuid

import httpx
import pytest

from services.deploy.app import create_app
from services.deploy.rendered import RenderedManifestsDriver
from shared.events import Topic
from shared.settings import Settings
from tests.integration.conftest import Publish, released
from tests.support import TopicReader, eventually, running, token

pytestmark = pytest.mark.integration

DEPLOYER = token("deploy-admin", user="dora")


def manifest_text(settings: Settings, project: str, service: str, environment: str) -> str | None:
    path = RenderedManifestsDriver(settings.home / "manifests").path(
        project, service, environment, f"{project}-{environment}"
    )
    return path.read_text() if path.exists() else None


async def test_manual_then_auto_deployment_render_manifests(service_settings: Settings, publish: Publish) -> None:
    settings = service_settings
    project, service, service_id = "shop", f"orders-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    base = f"/environments/dev/projects/{project}/services/{service}"
    topics = (Topic.DEPLOY_REQUESTED.value, Topic.DEPLOY_STATUS.value)
    assert settings.kafka_bootstrap is not None

    async with TopicReader(settings.kafka_bootstrap, *topics) as reader, running(create_app(settings)) as client:
        await publish(released(service_id, project, service, "1.0.0", "dev"))
        await eventually(lambda: _status_is(client, base, 200))
        resource = {"name": "orders-db", "type": "database", "data": {"url": "postgres://db/o"}}
        created = await client.post("/environments/dev/resources", json=resource, headers=DEPLOYER)
        assert created.status_code == 201, created.text

        manual = await client.post(
            "/deployments",
            headers=DEPLOYER,
            json={
                "project": project,
                "service": service,
                "environment": "dev",
                "version": "1.0.0",
                "resources": ["orders-db"],
                "replicas": 2,
            },
        )
        assert manual.status_code == 202, manual.text
        first = manual.json()["id"]
        await reader.wait_for(lambda t, v: t == "deploy.requested" and _of(v, first))
        status = await reader.wait_for(lambda t, v: t == "deploy.status" and _of(v, first))
        assert (status["data"]["state"], status["data"]["desired"]) == ("rendered", 2)
        text = manifest_text(settings, project, service, "dev")
        assert text is not None and "version: 1.0.0" in text

        auto = await client.put(f"{base}/auto-deploy", json={"enabled": True}, headers=DEPLOYER)
        assert auto.status_code == 200, auto.text
        second = released(service_id, project, service, "1.1.0", "dev")
        await publish(second)
        requested = await reader.wait_for(
            lambda t, v: (
                t == "deploy.requested" and v["data"]["version"] == "1.1.0" and v["data"]["service_id"] == service_id
            )
        )
        assert (requested["data"]["trigger"], requested["data"]["by"]) == ("auto", "auto-deploy")
        assert requested["data"]["replicas"] == 2
        assert requested["causation_id"] == second.id
        assert requested["correlation_id"] == second.correlation_id
        auto_id = requested["data"]["deployment_id"]
        status = await reader.wait_for(lambda t, v: t == "deploy.status" and _of(v, auto_id))
        assert status["data"]["state"] == "rendered"
        assert status["correlation_id"] == second.correlation_id
        text = manifest_text(settings, project, service, "dev")
        assert text is not None and "version: 1.1.0" in text

        # The same release again changes nothing (inbox); a later event proves it was consumed.
        await publish(second)
        await publish(released(service_id, project, service, "1.1.0", "qa"))
        qa = f"/environments/qa/projects/{project}/services/{service}"
        await eventually(lambda: _status_is(client, qa, 200))
        state = (await client.get(base, headers=DEPLOYER)).json()
        assert state["stable"]["version"] == "1.1.0" and state["auto_deploy"] is True
        history = (await client.get(f"{base}/deployments", headers=DEPLOYER)).json()
        assert [(d["trigger"], d["version"], d["state"]) for d in history] == [
            ("auto", "1.1.0", "rendered"),
            ("manual", "1.0.0", "rendered"),
        ]


def _of(value: dict, deployment_id: str) -> bool:
    return bool(value["data"].get("deployment_id") == deployment_id)


async def _status_is(client: httpx.AsyncClient, path: str, code: int) -> bool:
    return (await client.get(path, headers=DEPLOYER)).status_code == code
