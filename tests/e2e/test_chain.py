"""The whole chain, as a user drives it: ``gantry up`` (five service processes and a broker),
everything through the gateway, GitLab's hook sent by ``gantry pipeline report``.

create project + service (a real bare git repository) → environment, release, auto-release →
first version, first manual deployment, auto-deploy → a feature branch's pipeline makes a version
that is not auto-released → the same ``main`` Pipeline Hook posted twice → exactly one new version
and one automatic deployment, whose manifest lands on disk.
Runs on the embedded broker + SQLite and on Apache Kafka + PostgreSQL.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import httpx
import pytest
import yaml

from shared.naming import label_value
from tests.e2e.stack import Stack
from tests.support import TopicReader, eventually

pytestmark = pytest.mark.e2e

PROJECT, SERVICE, ENV = "shop", "web service", "staging"


@pytest.fixture(scope="module", params=["embedded+sqlite", "apache+postgres", "embedded+sqlite+kubernetes"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp(request.param)
    if request.param == "embedded+sqlite":
        with Stack(tmp_path) as running:
            yield running
        return
    if request.param == "embedded+sqlite+kubernetes":
        plane = request.getfixturevalue("k8s_control_plane")
        with Stack(tmp_path, kubeconfig=str(plane.kubeconfig)) as running:
            yield running
        return
    kafka = request.getfixturevalue("apache_kafka")
    postgres = request.getfixturevalue("postgres")
    database = f"gantry_{os.urandom(4).hex()}"
    postgres.create_database(database)
    with Stack(tmp_path, kafka_bootstrap=kafka, database_url=postgres.url(database)) as running:
        yield running


def commit(pipeline_id: int) -> str:
    """Each pipeline of the chain runs on a commit of its own: one commit makes one version."""
    return f"{pipeline_id:040x}"


def report(stack: Stack, pipeline_id: int, status: str = "success", ref: str = "main") -> dict:
    result = stack.cli(
        "pipeline",
        "report",
        "--project",
        PROJECT,
        "--service",
        SERVICE,
        "--status",
        status,
        "--pipeline-id",
        str(pipeline_id),
        "--ref",
        ref,
        "--sha",
        commit(pipeline_id),
        "--gateway",
        stack.gateway,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def until(call, status: int) -> httpx.Response:
    """Repeat a call until it answers ``status`` (the services learn of each other through events)."""

    async def probe() -> httpx.Response | None:
        answer = await call()
        return answer if answer.status_code == status else None

    return await eventually(probe, timeout=60, interval=0.1)


async def test_webhook_to_deploy_status(stack: Stack) -> None:
    async with stack.client() as api:
        created = await api.post(
            "/api/catalog/projects", json={"code": PROJECT, "name": "Shop", "gitlab_group": "acme"}
        )
        assert created.status_code == 201, created.text
        service = await api.post(
            f"/api/catalog/projects/{PROJECT}/services",
            json={"code": SERVICE, "name": "Web", "group": "com.acme.shop", "type": "python-fastapi"},
        )
        assert service.status_code == 201, service.text
        repository = service.json()["repository_url"]
        assert Path(url2pathname(urlparse(repository).path), "HEAD").is_file(), repository

        env = await api.post("/api/release/environments", json={"code": ENV, "name": "Staging", "tier": "staging"})
        assert env.status_code == 201, env.text
        base = f"/api/release/projects/{PROJECT}/services/{SERVICE}"
        await until(lambda: api.post(f"{base}/releases", json={"environment": ENV}), 201)
        again = await api.post(f"{base}/releases", json={"environment": ENV})
        assert again.status_code == 409, "already released to this environment: refused"
        assert (await api.put(f"{base}/auto-release", json={"enabled": True})).status_code == 200

        # a hook that overtakes service.created is kept by versioning and applied once it knows the service
        await eventually(lambda: _announced(stack, 101), timeout=60, interval=0.2)
        v1 = await stack.wait_for_version(api, PROJECT, SERVICE, 101)
        resource = await api.post(
            f"/api/deploy/environments/{ENV}/resources",
            json={"name": "shop-db", "type": "database", "data": {"url": "postgresql://db/shop"}},
        )
        assert resource.status_code == 201, resource.text
        first = await until(
            lambda: api.post(
                "/api/deploy/deployments",
                json={
                    "project": PROJECT,
                    "service": SERVICE,
                    "environment": ENV,
                    "version": v1["name"],
                    "resources": ["shop-db"],
                    "replicas": 3,
                    "strategy": "rolling",
                },
            ),
            202,
        )
        assert first.json()["trigger"] == "manual"
        running = f"/api/deploy/environments/{ENV}/projects/{PROJECT}/services/{SERVICE}"
        assert (await api.put(f"{running}/auto-deploy", json={"enabled": True})).status_code == 200

        final = "succeeded" if stack.kubeconfig else "rendered"
        topics = ("gitlab.hook.received", "pipeline.succeeded", "version.released", "deploy.requested", "deploy.status")
        async with TopicReader(stack.bootstrap, *topics) as statuses:
            # auto-release takes the default branch (main) only: a feature branch's version stays out
            report(stack, 150, ref="feature/login")
            feature = await stack.wait_for_version(api, PROJECT, SERVICE, 150)
            posted_at = time.monotonic()
            second, duplicate = report(stack, 202), report(stack, 202)
            assert second["accepted"] and duplicate["accepted"] and second["event_id"] != duplicate["event_id"]
            v2 = await stack.wait_for_version(api, PROJECT, SERVICE, 202)
            status = await statuses.wait_for(
                lambda topic, value: (
                    topic == "deploy.status"
                    and value["data"]["version"] == v2["name"]
                    and value["data"]["state"] == final
                ),
                timeout=60,
            )
            elapsed = time.monotonic() - posted_at
            hook = await statuses.wait_for(
                lambda topic, value: topic == "gitlab.hook.received" and value["id"] == second["event_id"]
            )
            requested = await statuses.wait_for(
                lambda topic, value: topic == "deploy.requested" and value["correlation_id"] == hook["correlation_id"]
            )
            # a later pipeline: the chain handles it after any duplicate of pipeline 202 would have shown
            report(stack, 303)
            v3 = await stack.wait_for_version(api, PROJECT, SERVICE, 303)
            await statuses.wait_for(
                lambda topic, value: (
                    topic == "deploy.status"
                    and value["data"]["version"] == v3["name"]
                    and value["data"]["state"] == final
                ),
                timeout=60,
            )
            announced = [v for v in statuses.of_type("pipeline.succeeded") if v["data"]["pipeline_id"] == 202]
            assert len(announced) == 1, "the same pipeline's success twice is announced once"
            # one service's events keep their order: had the feature version been released, it would
            # come before v3's release
            await statuses.wait_for(
                lambda topic, value: topic == "version.released" and value["data"]["version"] == v3["name"]
            )
            released = [v["data"]["version"] for v in statuses.of_type("version.released")]
            assert v2["name"] in released, released
            assert feature["name"] not in released, "a feature branch's version is not auto-released"
            asked = [v["data"]["version"] for v in statuses.of_type("deploy.requested")]
            assert feature["name"] not in asked
        chain = datetime.fromisoformat(status["time"]) - datetime.fromisoformat(hook["time"])
        rollout = datetime.fromisoformat(status["time"]) - datetime.fromisoformat(requested["time"])
        print(
            f"\n{stack.kind}: webhook accepted → deploy.status {final} {chain.total_seconds():.3f}s, "
            f"deploy.requested → {final} {rollout.total_seconds():.3f}s (event times); "
            f"CLI report → deploy.status seen {elapsed:.3f}s"
        )
        assert status["correlation_id"] == hook["correlation_id"], "one correlation id for the whole chain"
        assert status["data"]["desired"] == 3
        if stack.kubeconfig:
            assert status["data"]["available"] == 3, "Kubernetes rolled it out: available = desired"

        versions = (await api.get(f"/api/versioning/projects/{PROJECT}/services/{SERVICE}/versions")).json()
        assert [v["pipeline_id"] for v in versions].count(202) == 1, "same pipeline twice → one version"
        history = (await api.get(f"{running}/deployments")).json()
        autos = [d for d in history if d["version"] == v2["name"]]
        assert len(autos) == 1 and autos[0]["trigger"] == "auto", history

    if stack.kubeconfig:
        await _check_cluster(stack, v3)
        return
    documents = [
        doc
        for path in (stack.home / "manifests").rglob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    assert deployments, "the embedded cluster driver writes the rendered manifests"
    assert [d["metadata"]["labels"]["version"] for d in deployments] == [label_value(v3["name"])]
    assert deployments[0]["spec"]["template"]["spec"]["containers"][0]["image"] == v3["image"]


async def _check_cluster(stack: Stack, version: dict) -> None:
    from kubernetes import client as k8s
    from kubernetes import config as kube_config

    api = kube_config.new_client_from_config(config_file=stack.kubeconfig)
    try:
        deployment = k8s.AppsV1Api(api).read_namespaced_deployment("shop-web-service", "staging")
        assert deployment.metadata.labels["version"] == label_value(version["name"])
        assert deployment.spec.template.spec.containers[0].image == version["image"]
        assert deployment.status.available_replicas == 3
        assert deployment.metadata.managed_fields[0].manager == "gantry"
    finally:
        api.close()


async def _announced(stack: Stack, pipeline_id: int) -> bool:
    result = stack.cli(
        "pipeline",
        "report",
        "--project",
        PROJECT,
        "--service",
        SERVICE,
        "--status",
        "success",
        "--pipeline-id",
        str(pipeline_id),
        "--sha",
        commit(pipeline_id),
        "--gateway",
        stack.gateway,
    )
    return result.returncode == 0


async def test_pipeline_report_names_an_unknown_service(stack: Stack) -> None:
    result = stack.cli(
        "pipeline", "report", "--project", "nope", "--service", "x", "--status", "success", "--gateway", stack.gateway
    )
    assert result.returncode == 1
    assert "does not exist" in result.stderr
