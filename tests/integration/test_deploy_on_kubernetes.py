"""The deploy service with the Kubernetes driver, driven over its REST API against the test
control plane: deploy, canary beside stable, promote, abort, rollback and scale, with the running
state showing the cluster's counts."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config

from services.deploy.app import create_app
from shared.settings import Settings
from tests.integration.conftest import released
from tests.support import SECRET, eventually, running, token

pytestmark = pytest.mark.integration
DEPLOYER = token("deploy-admin", user="dora")


@pytest.fixture
def service_settings(embedded_kafka: str, k8s_control_plane, tmp_path) -> Settings:
    return Settings(
        home=tmp_path,
        kafka_bootstrap=embedded_kafka,
        secret=SECRET,
        kafka_fetch_max_wait_ms=10,
        kafka_idempotence=False,
        kafka_session_timeout_ms=1000,
        kafka_group_prefix=f"t{uuid.uuid4().hex[:8]}",
        kubeconfig=str(k8s_control_plane.kubeconfig),
        progress_deadline_seconds=60,
    )


async def test_deploy_canary_promote_abort_rollback_scale(service_settings, publish, k8s_control_plane) -> None:
    project, service, service_id = "shop", f"web{uuid.uuid4().hex[:5]}", uuid.uuid4().hex
    password = f"pw-{uuid.uuid4().hex}"  # a secret value: it must reach the cluster only in a Secret
    state_url = f"/environments/qa/projects/{project}/services/{service}"
    async with running(create_app(service_settings)) as api:
        for version in ("v1", "v2", "v3"):
            await publish(released(service_id, project, service, version, "qa"))

        await api_ready_for(api, project, service, "v3")  # v1 and v2 came before it, in order
        assert (
            await api.post(
                "/environments/qa/resources",
                headers=DEPLOYER,
                json={"name": "cfg", "type": "config", "data": {"LOG_LEVEL": "info", "password": password}},
            )
        ).status_code == 201

        async def state(stable: tuple[str, int] | None, canary: tuple[str, int] | None) -> dict[str, Any]:
            async def probe() -> dict[str, Any] | None:
                body = (await api.get(state_url, headers=DEPLOYER)).json()

                def track(name: str) -> tuple[str, int] | None:
                    got = body.get(name)
                    return (got["version"], got["available"]) if got else None

                return (
                    body if (track("stable"), track("canary")) == (stable, canary) and not body["deploying"] else None
                )

            return await eventually(probe, timeout=60, interval=0.1)

        async def act(method: str, path: str, **body: Any) -> None:
            answer = await api.request(method, path, headers=DEPLOYER, json=body or None)
            assert answer.status_code == 202, answer.text

        await act(
            "POST",
            "/deployments",
            project=project,
            service=service,
            environment="qa",
            version="v1",
            resources=["cfg"],
            replicas=3,
            strategy="rolling",
        )
        running_state = await state(("v1", 3), None)
        assert running_state["stable"]["desired"] == running_state["stable"]["current"] == 3

        await act(
            "POST",
            "/deployments",
            project=project,
            service=service,
            environment="qa",
            version="v2",
            replicas=1,
            strategy="canary",
        )
        await state(("v1", 3), ("v2", 1))
        await act("POST", f"{state_url}/canary/promote")
        await state(("v2", 3), None)

        await act(
            "POST",
            "/deployments",
            project=project,
            service=service,
            environment="qa",
            version="v3",
            replicas=1,
            strategy="canary",
        )
        await state(("v2", 3), ("v3", 1))
        await act("POST", f"{state_url}/canary/abort")
        await state(("v2", 3), None)

        await act("POST", f"{state_url}/rollback")
        await state(("v1", 3), None)
        await act("PUT", f"{state_url}/replicas", replicas=5)
        await state(("v1", 5), None)

        history = (await api.get(f"{state_url}/deployments", headers=DEPLOYER)).json()
        assert [d["action"] for d in history][:3] == ["scale", "rollback", "abort"]
        assert all(d["state"] == "succeeded" for d in history), [
            (d["action"], d["state"], d["message"]) for d in history
        ]

    api_client = kube_config.new_client_from_config(config_file=str(k8s_control_plane.kubeconfig))
    try:
        apps = k8s.AppsV1Api(api_client)
        listed = apps.list_namespaced_deployment(f"{project}-qa", label_selector=f"app=shop-{service}").items
        names = [d.metadata.name for d in listed]
        core = k8s.CoreV1Api(api_client)
        selector = f"app=shop-{service}"
        config_maps = core.list_namespaced_config_map(f"{project}-qa", label_selector=selector).items
        secrets = core.list_namespaced_secret(f"{project}-qa", label_selector=selector).items
    finally:
        api_client.close()
    assert names == [f"shop-{service}"], "after promote and abort only the stable Deployment is left"
    assert config_maps and all(password not in str(c.data) for c in config_maps)
    assert [base64.b64decode(s.data["CFG_PASSWORD"]).decode() for s in secrets] == [password]


async def test_a_restarted_deploy_service_follows_the_rollouts_it_left(service_settings, publish, k8s_control_plane):
    """A rollout still progressing when the service stops is followed to its end after a restart."""
    project, service, service_id = f"p{uuid.uuid4().hex[:6]}", "web", uuid.uuid4().hex
    namespace = f"{project}-qa"
    api_client = kube_config.new_client_from_config(config_file=str(k8s_control_plane.kubeconfig))
    core = k8s.CoreV1Api(api_client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    core.create_namespaced_resource_quota(
        namespace,
        k8s.V1ResourceQuota(  # no pod can start yet
            metadata=k8s.V1ObjectMeta(name="hold"), spec=k8s.V1ResourceQuotaSpec(hard={"pods": "0"})
        ),
    )
    state_url = f"/environments/qa/projects/{project}/services/{service}"
    try:
        async with running(create_app(service_settings)) as api:
            await publish(released(service_id, project, service, "v1", "qa"))
            await api_ready_for(api, project, service)
            answer = await api.post(
                "/deployments",
                headers=DEPLOYER,
                json={
                    "project": project,
                    "service": service,
                    "environment": "qa",
                    "version": "v1",
                    "resources": [],
                    "replicas": 2,
                },
            )
            assert answer.status_code == 202, answer.text

            async def progressing() -> bool:
                history = (await api.get(f"{state_url}/deployments", headers=DEPLOYER)).json()
                return bool(history) and history[0]["state"] == "progressing"

            await eventually(progressing, timeout=30)
        core.delete_namespaced_resource_quota("hold", namespace)  # while the service is down

        async with running(create_app(service_settings)) as api:

            async def finished() -> dict[str, Any] | None:
                history = (await api.get(f"{state_url}/deployments", headers=DEPLOYER)).json()
                return history[0] if history[0]["state"] == "succeeded" else None

            done = await eventually(finished, timeout=60)
            assert (done["desired"], done["available"]) == (2, 2)
    finally:
        api_client.close()


async def api_ready_for(api, project: str, service: str, version: str = "v1") -> None:
    """The released version has reached the deploy service (it learns of it through an event).

    Asked with a resource that does not exist, so the answer is a refusal either way, and nothing
    is deployed: "does not exist" (the environment) or "not released" until the event has arrived,
    "unknown resource" after."""

    async def known() -> bool:
        probe = await api.post(
            "/deployments",
            headers=DEPLOYER,
            json={
                "project": project,
                "service": service,
                "environment": "qa",
                "version": version,
                "resources": ["no-such-resource"],
            },
        )
        assert probe.status_code in (404, 409, 422), probe.text
        return probe.status_code == 422 and "unknown resource" in probe.text

    await eventually(known, timeout=30)
