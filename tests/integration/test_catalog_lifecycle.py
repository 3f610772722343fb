"""Catalog on a real broker and database: it learns from deploy.status where a service runs, refuses
to delete it there, deletes it once removed everywhere, and announces every change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from services.catalog.app import create_app
from services.catalog.running import environments_running
from shared.events import DeployStatus, Envelope, Topic, new_event
from shared.settings import Settings
from tests.integration.conftest import Publish
from tests.support import ADMIN, TopicReader, eventually, running, token

pytestmark = pytest.mark.integration


def deployed(service: dict, state: str) -> Envelope:
    data = DeployStatus(
        service_id=service["id"],
        project=service["project"],
        service="web",
        deployment_id=f"d-{state}",
        environment="staging",
        version="1.0.0",
        state=state,  # type: ignore[arg-type]
        desired=1,
    )
    return new_event(Topic.DEPLOY_STATUS, data, source="gantry/deploy", subject=data.subject)


async def test_a_service_running_somewhere_is_deleted_only_once_removed(
    service_settings: Settings, publish: Publish, unique_id: str
) -> None:
    # a project of its own: the brokers are shared, and other tests read their topics from the start
    shop = f"shop-{unique_id}"
    owner, web = token(f"{shop}:project-owner", user="olga"), f"/projects/{shop}/services/web"
    assert service_settings.kafka_bootstrap is not None
    api = create_app(service_settings)
    async with (
        running(api) as catalog,
        TopicReader(service_settings.kafka_bootstrap, "service.changed", "project.changed") as topics,
    ):
        project = {"code": shop, "name": "Shop", "gitlab_group": f"acme-{unique_id}"}
        assert (await catalog.post("/projects", json=project, headers=ADMIN)).status_code == 201
        body = {"code": "web", "name": "Web", "group": "com.acme", "type": "go-http"}
        service = (await catalog.post(f"/projects/{shop}/services", json=body, headers=owner)).json()
        assert (await catalog.patch(web, json={"enabled": False}, headers=owner)).status_code == 200

        async def runs_in() -> list[str]:
            async with api.state.runtime.uow.sessions() as session:
                return await environments_running(session, service["id"])

        await publish(deployed(service, "succeeded"))
        assert await eventually(runs_in) == ["staging"]
        refused = await catalog.delete(web, headers=owner)
        assert refused.status_code == 409 and "still runs in staging" in refused.json()["detail"]

        await publish(deployed(service, "removed"))
        await eventually(lambda: _none(runs_in))
        assert (await catalog.delete(web, headers=owner)).status_code == 204
        assert (await catalog.delete(f"/projects/{shop}", headers=ADMIN)).status_code == 204

        def of_web(topic: str, value: dict) -> bool:
            return topic == "service.changed" and value["data"]["service_id"] == service["id"]

        deleted = await topics.wait_for(lambda t, v: of_web(t, v) and v["data"]["change"] == "deleted")
        assert deleted["data"]["enabled"] is False
        gone = await topics.wait_for(lambda t, v: t == "project.changed" and v["data"]["project"] == shop)
        assert gone["data"] == {"project": shop, "change": "deleted"}
        announced = [v["data"]["change"] for v in topics.of_type("service.changed") if of_web("service.changed", v)]
        assert announced == ["disabled", "deleted"]


async def _none(probe: Callable[[], Awaitable[list[str]]]) -> bool:
    return await probe() == []
