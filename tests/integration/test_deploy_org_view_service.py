"""The deploy service in-process on a real broker and database: the organization view follows
``version.released``, ``service.changed`` and ``release.withdrawn`` as they arrive on their topics,
and ``/readyz`` names the cluster driver."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from services.deploy.app import create_app
from shared.events import ReleaseWithdrawn, ServiceChanged, Topic, new_event
from shared.settings import Settings
from tests.integration.conftest import Publish, released
from tests.support import eventually, running, token

pytestmark = pytest.mark.integration

DEPLOYER = token("deploy-admin", user="dora")


async def _listed(client: httpx.AsyncClient, service: str) -> list[dict[str, Any]]:
    answer = await client.get("/services", params={"q": service}, headers=DEPLOYER)
    assert answer.status_code == 200, answer.text
    return list(answer.json())


async def test_the_organization_view_follows_the_lifecycle_events(service_settings: Settings, publish: Publish) -> None:
    project, service, service_id = "shop", f"cart-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    subject = f"{project}/{service}"

    async with running(create_app(service_settings)) as client:
        ready = (await client.get("/readyz")).json()
        assert ready["drivers"]["cluster"] == {
            "driver": "rendered",
            "manifests": str(service_settings.home / "manifests"),
        }

        await publish(released(service_id, project, service, "1.0.0", "dev"))
        listed = await eventually(lambda: _listed(client, service))
        assert [v["version"] for v in listed[0]["environments"][0]["versions"]] == ["1.0.0"]

        disabled = ServiceChanged(
            service_id=service_id, project=project, service=service, name="Cart", enabled=False, change="disabled"
        )
        await publish(
            new_event(Topic.SERVICE_CHANGED, disabled, source="gantry/catalog", subject=subject, correlation_id="c")
        )

        async def shown_disabled() -> bool:
            return [(s["name"], s["state"]) for s in await _listed(client, service)] == [("Cart", "disabled")]

        await eventually(shown_disabled)
        body = {"project": project, "service": service, "environment": "dev", "version": "latest", "resources": []}
        refused = await client.post("/deployments", json=body, headers=DEPLOYER)
        assert refused.status_code == 409 and f"{subject} is disabled" in refused.json()["detail"]

        withdrawn = ReleaseWithdrawn(
            service_id=service_id, project=project, service=service, environment="dev", by="bo"
        )
        await publish(
            new_event(Topic.RELEASE_WITHDRAWN, withdrawn, source="gantry/release", subject=subject, correlation_id="c")
        )

        async def gone() -> bool:
            return await _listed(client, service) == []

        await eventually(gone)
