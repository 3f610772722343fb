"""Catalog and versioning on a real broker and database: service.created teaches versioning the
repository, a Pipeline Hook becomes pipeline.succeeded then one version.created; a poison event
goes to the dead-letter topic."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from aiokafka import AIOKafkaProducer

from services.catalog.app import create_app as create_catalog
from services.versioning.app import create_app as create_versioning
from shared.auth import webhook_secret
from shared.settings import Settings
from tests.integration.test_webhook_door import hook_headers, make_services
from tests.support import ADMIN, SECRET, TopicReader, eventually, running, token

pytestmark = pytest.mark.integration


def pipeline_hook(service: dict, pipeline_id: int, status: str, sha: str = "f" * 40) -> dict:
    return {
        "object_kind": "pipeline",
        "object_attributes": {"id": pipeline_id, "ref": "main", "tag": False, "sha": sha, "status": status},
        "project": {"id": service["scm_project_id"], "path_with_namespace": service["repository_path"]},
        "commit": {"message": "Fix", "author": {"name": "Ada"}},
    }


async def test_service_to_version(service_settings: Settings) -> None:
    async with (
        running(create_catalog(service_settings)) as catalog,
        running(create_versioning(service_settings)) as versioning,
        TopicReader(service_settings.kafka_bootstrap, "service.created", "version.created") as topics,
    ):
        assert (
            await catalog.post(
                "/projects", json={"code": "shop", "name": "Shop", "gitlab_group": "acme"}, headers=ADMIN
            )
        ).status_code == 201
        owner = token("shop:project-owner", user="olga")
        created = await catalog.post(
            "/projects/shop/services",
            headers=owner,
            json={"code": "web", "name": "Web", "group": "com.acme", "type": "go-http"},
        )
        assert created.status_code == 201, created.text
        service = created.json()
        assert Path(url2pathname(urlparse(service["repository_url"]).path), "HEAD").is_file()
        member = token("shop:project-member", user="max")
        forbidden = await catalog.post(
            "/projects/shop/services",
            headers=member,
            json={"code": "api", "name": "Api", "group": "com.acme", "type": "go-http"},
        )
        assert forbidden.status_code == 403 and "project-owner" in forbidden.json()["detail"]

        announced = await topics.wait_for(
            lambda t, v: t == "service.created" and v["data"]["service_id"] == service["id"]
        )
        assert announced["data"]["repository_path"] == service["repository_path"]

        def headers(delivery: str) -> dict[str, str]:
            return {
                "X-Gitlab-Event": "Pipeline Hook",
                "Idempotency-Key": delivery,
                "X-Gitlab-Token": webhook_secret(SECRET, service["scm_project_id"]),
            }

        running_hook = await versioning.post(
            "/webhooks/gitlab", headers=headers("delivery-0"), json=pipeline_hook(service, 5, "running")
        )
        assert running_hook.status_code == 202, running_hook.text
        success = pipeline_hook(service, 5, "success")
        first = await versioning.post("/webhooks/gitlab", json=success, headers=headers("delivery-1"))
        resent = await versioning.post("/webhooks/gitlab", json=success, headers=headers("delivery-1"))
        twice = await versioning.post("/webhooks/gitlab", json=success, headers=headers("delivery-2"))
        assert [a.status_code for a in (first, resent, twice)] == [202, 202, 202]
        assert first.json()["event_id"] == resent.json()["event_id"] == "delivery-1"

        version = await topics.wait_for(
            lambda t, v: t == "version.created" and v["data"]["service_id"] == service["id"]
        )
        assert version["correlation_id"] == "delivery-1"
        assert version["data"]["image"].endswith(":ffffffff")
        # a later pipeline of the same service: its events are ordered after any duplicate of the first
        later = pipeline_hook(service, 6, "success", sha="e" * 40)  # another commit
        assert (await versioning.post("/webhooks/gitlab", json=later, headers=headers("delivery-3"))).status_code == 202
        await topics.wait_for(
            lambda t, v: (
                t == "version.created" and v["data"]["pipeline_id"] == 6 and v["data"]["service_id"] == service["id"]
            )
        )
        created = [
            v["data"]["pipeline_id"]
            for v in topics.of_type("version.created")
            if v["data"]["service_id"] == service["id"]
        ]
        assert created == [5, 6], "the same hook resent, and the same pipeline's success twice → one version"
        listed = await eventually(lambda: _versions(versioning, member))
        assert sorted(v["pipeline_id"] for v in listed) == [5, 6]


async def test_one_commit_makes_one_version_however_many_pipelines_pass(service_settings: Settings) -> None:
    """Through the webhook and Kafka: two successful pipelines of one commit make one version (the
    second is linked to it), a late ``running`` does not undo a success, another commit makes another."""
    async with (
        running(create_catalog(service_settings)) as catalog,
        running(create_versioning(service_settings)) as versioning,
        TopicReader(service_settings.kafka_bootstrap, "version.created") as topics,
    ):
        [service] = await make_services(catalog, "commit")
        jobs = [{"id": 1, "stage": "build", "name": "build", "status": "success"}]
        hooks = [
            ("p7-ok", {**pipeline_hook(service, 7, "success", sha="a" * 40), "builds": jobs}),
            ("p8-ok", {**pipeline_hook(service, 8, "success", sha="a" * 40), "jobs": jobs}),
            ("p7-late", {**pipeline_hook(service, 7, "running", sha="a" * 40), "builds": jobs}),
            ("p9-ok", pipeline_hook(service, 9, "success", sha="b" * 40)),
        ]
        for delivery, body in hooks:
            answer = await versioning.post("/webhooks/gitlab", json=body, headers=hook_headers(service, delivery))
            assert answer.status_code == 202, answer.text

        def made_by(value: dict) -> int | None:
            data = value["data"]
            return data["pipeline_id"] if data["service_id"] == service["id"] else None

        await topics.wait_for(lambda topic, value: topic == "version.created" and made_by(value) == 9)
        made = [made_by(value) for value in topics.of_type("version.created") if made_by(value)]
        assert made == [7, 9], "pipeline 8 ran on pipeline 7's commit: no version of its own"
        path = f"/projects/shop/services/{service['code']}/pipelines"
        shown = {p["pipeline_id"]: p for p in (await versioning.get(path, headers=token("deploy-admin"))).json()}
        assert shown[8]["version"] == shown[7]["version"] and shown[8]["version_made"] is False
        assert (shown[7]["status"], shown[7]["version_made"]) == ("success", True), "the late 'running' changed nothing"
        assert shown[9]["version"] != shown[7]["version"]


async def _versions(client, headers):
    answer = await client.get("/projects/shop/services/web/versions", headers=headers)
    return answer.json() if answer.status_code == 200 and len(answer.json()) == 2 else None


async def test_poison_event_goes_to_dead_letter_topic(service_settings: Settings, unique_id: str) -> None:
    poison = f"{{not json {unique_id}"
    async with (
        running(create_versioning(service_settings)),
        TopicReader(service_settings.kafka_bootstrap, "pipeline.succeeded.dlq") as dlq,
    ):
        producer = AIOKafkaProducer(bootstrap_servers=service_settings.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("pipeline.succeeded", poison.encode(), key=b"x")
        finally:
            await producer.stop()
        dead = await dlq.wait_for(lambda t, v: v["value"] == poison, timeout=60)
        assert dead["topic"] == "pipeline.succeeded" and dead["reason"].startswith("undecodable")
        assert dead["consumer"] == "versioning", "the dead letter names the consumer that gave up"


async def test_the_rest_apis_answer_people_clearly(service_settings: Settings) -> None:
    async with (
        running(create_catalog(service_settings)) as catalog,
        running(create_versioning(service_settings)) as versioning,
    ):
        types = await catalog.get("/service-types", headers=token("shop:project-member"))
        assert {t["code"] for t in types.json()} == {"python-fastapi", "java-spring", "go-http", "static-web"}
        body = {"code": "shop", "name": "Shop", "gitlab_group": "acme"}
        assert (await catalog.post("/projects", json=body, headers=token("shop:project-owner"))).status_code == 403
        assert (await catalog.post("/projects", json=body, headers=ADMIN)).status_code == 201
        again = await catalog.post("/projects", json=body, headers=ADMIN)
        assert again.status_code == 409 and "already exists" in again.json()["detail"]
        bad = await catalog.post("/projects", json={**body, "code": "Shop!"}, headers=ADMIN)
        assert bad.status_code == 422 and "project code" in bad.json()["detail"]
        missing = await catalog.post("/projects", json={"code": "x"}, headers=ADMIN)
        assert missing.status_code == 422 and "body.name: Field required" in missing.json()["detail"]
        assert (await catalog.post("/projects", json={**body, "code": "other"}, headers=ADMIN)).status_code == 201
        seen = await catalog.get("/projects", headers=token("shop:project-member"))
        assert [p["code"] for p in seen.json()] == ["shop"], "a member sees only their projects"
        assert len((await catalog.get("/projects", headers=ADMIN)).json()) == 2
        unknown = await catalog.get("/projects/shop/services/nope", headers=ADMIN)
        assert unknown.status_code == 404 and "'nope'" in unknown.json()["detail"]

        push = await versioning.post(
            "/webhooks/gitlab", json={"object_kind": "push"}, headers={"X-Gitlab-Event": "Push Hook"}
        )
        assert push.status_code == 200 and push.json()["accepted"] is False
        anonymous = await versioning.post(
            "/webhooks/gitlab", content=b"{not json", headers={"X-Gitlab-Event": "Pipeline Hook"}
        )
        assert anonymous.status_code == 401 and "X-Gitlab-Token is missing" in anonymous.json()["detail"]
        garbled = await versioning.post(
            "/webhooks/gitlab", content=b"{not json", headers={"X-Gitlab-Event": "Pipeline Hook", "X-Gitlab-Token": "x"}
        )
        assert garbled.status_code == 400 and "not JSON" in garbled.json()["detail"]
        ghost = {"scm_project_id": "local-ghost", "repository_path": "acme/ghost"}
        stranger = await versioning.post(
            "/webhooks/gitlab",
            json=pipeline_hook(ghost, 1, "success"),
            headers={"X-Gitlab-Event": "Pipeline Hook", "X-Gitlab-Token": "x"},
        )
        assert stranger.status_code == 401 and "GitLab project local-ghost" in stranger.json()["detail"]
        unauthenticated = await versioning.get("/projects/shop/services/web/pipelines")
        assert unauthenticated.status_code == 401 and "gantry token issue" in unauthenticated.json()["detail"]
