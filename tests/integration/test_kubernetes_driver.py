"""The Kubernetes driver against a real control plane (etcd, kube-apiserver, controller-manager,
scheduler; kwok plays the nodes and marks pods ready): rollouts, scaling, canary, rollback,
a rollout that never becomes ready, and a field owned by another manager."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config

from services.deploy.kubernetes import KubernetesDriver
from tests.integration.shop_web import settled, web_spec
from tests.support import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(k8s_control_plane):
    api = kube_config.new_client_from_config(config_file=str(k8s_control_plane.kubeconfig))
    yield k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    api.close()


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def driver(k8s_control_plane) -> KubernetesDriver:
    return KubernetesDriver(str(k8s_control_plane.kubeconfig), progress_deadline_seconds=600)


async def test_deploy_rolls_out_until_available_equals_desired(driver, cluster, namespace):
    first = await driver.apply(web_spec(namespace))
    assert first.state == "progressing" and first.desired == 3
    done = await settled(driver, namespace)
    assert (done.state, done.desired, done.current, done.updated, done.available) == ("succeeded", 3, 3, 3, 3)
    apps, core = cluster
    pods = core.list_namespaced_pod(namespace, label_selector="app=shop-web,track=stable").items
    assert len(pods) == 3 and all(p.spec.node_name.startswith("kwok-node") for p in pods)
    config = core.read_namespaced_config_map("shop-web-config", namespace)
    secret = core.read_namespaced_secret("shop-web-secret", namespace)
    assert "DB_URL" in secret.data and "DB_URL" not in (config.data or {})
    generation = apps.read_namespaced_deployment("shop-web", namespace).metadata.generation
    again = await driver.apply(web_spec(namespace))
    assert again.state == "succeeded", "the same request applied twice changes nothing"
    assert apps.read_namespaced_deployment("shop-web", namespace).metadata.generation == generation


async def test_scale_up_and_down(driver, cluster, namespace):
    await driver.apply(web_spec(namespace, replicas=1))
    assert (await settled(driver, namespace)).available == 1
    await driver.apply(web_spec(namespace, replicas=4))
    assert (await settled(driver, namespace)).available == 4
    await driver.apply(web_spec(namespace, replicas=2))
    apps, core = cluster

    async def two_pods() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector="app=shop-web").items
        return len([p for p in pods if p.metadata.deletion_timestamp is None]) == 2

    await eventually(two_pods, timeout=60)
    assert (await settled(driver, namespace)).available == 2


async def test_canary_beside_stable_then_promote_or_abort(driver, cluster, namespace):
    apps, core = cluster
    await driver.apply(web_spec(namespace, "v1", replicas=3))
    await settled(driver, namespace)
    await driver.apply(web_spec(namespace, "v2", replicas=1, track="canary"))
    assert (await settled(driver, namespace, "canary")).available == 1
    service = core.read_namespaced_service("shop-web", namespace)
    assert service.spec.selector == {"app": "shop-web"}, "one Service in front of both tracks"
    pods = core.list_namespaced_pod(namespace, label_selector="app=shop-web").items
    tracks = sorted(p.metadata.labels["track"] for p in pods if p.metadata.deletion_timestamp is None)
    assert tracks == ["canary", "stable", "stable", "stable"], "the replica ratio is the traffic share"

    # promote: the canary's version becomes stable, the canary track goes away
    await driver.apply(web_spec(namespace, "v2", replicas=3))
    await driver.delete("shop", "web", "staging", namespace, "canary")
    assert (await settled(driver, namespace)).state == "succeeded"
    stable = apps.read_namespaced_deployment("shop-web", namespace)
    assert stable.spec.template.spec.containers[0].image.endswith(":v2")
    assert await driver.status("shop", "web", "staging", namespace, "canary") is None
    core.read_namespaced_service("shop-web", namespace)  # the shared Service stays

    # abort: a new canary is removed, stable untouched
    await driver.apply(web_spec(namespace, "v3", replicas=1, track="canary"))
    await settled(driver, namespace, "canary")
    await driver.delete("shop", "web", "staging", namespace, "canary")
    assert await driver.status("shop", "web", "staging", namespace, "canary") is None
    assert apps.read_namespaced_deployment("shop-web", namespace).spec.template.spec.containers[0].image.endswith(":v2")


async def test_rollback_to_a_previous_version(driver, cluster, namespace):
    apps, _ = cluster
    for version in ("v1", "v2", "v1"):
        await driver.apply(web_spec(namespace, version, replicas=2))
        assert (await settled(driver, namespace)).state == "succeeded"
    deployment = apps.read_namespaced_deployment("shop-web", namespace)
    assert deployment.spec.template.spec.containers[0].image.endswith(":v1")
    assert deployment.metadata.labels["version"] == "v1"


async def test_a_rollout_that_never_becomes_ready_fails(k8s_control_plane, cluster, namespace):
    """A quota of zero pods: the ReplicaSet can create none, the progress deadline passes."""
    _, core = cluster
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    core.create_namespaced_resource_quota(
        namespace,
        k8s.V1ResourceQuota(
            metadata=k8s.V1ObjectMeta(name="no-pods"), spec=k8s.V1ResourceQuotaSpec(hard={"pods": "0"})
        ),
    )
    driver = KubernetesDriver(str(k8s_control_plane.kubeconfig), progress_deadline_seconds=5)
    assert (await driver.apply(web_spec(namespace, replicas=2))).state == "progressing"
    failed = await settled(driver, namespace, timeout=90)
    assert failed.state == "failed" and "progress deadline exceeded" in failed.message
    assert (failed.desired, failed.available) == (2, 0)


async def test_a_field_owned_by_another_manager_is_a_failed_deployment(driver, cluster, namespace):
    apps, _ = cluster
    await driver.apply(web_spec(namespace, replicas=2))
    await settled(driver, namespace)
    # someone scales by hand with their own field manager, taking .spec.replicas
    apps.patch_namespaced_deployment(
        "shop-web",
        namespace,
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop-web"}, "spec": {"replicas": 5}},
        field_manager="ops-console",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    conflict = await driver.apply(web_spec(namespace, replicas=3))
    assert conflict.state == "failed"
    assert "conflict" in conflict.message and "ops-console" in conflict.message
    assert apps.read_namespaced_deployment("shop-web", namespace).spec.replicas == 5, "nothing overwritten"


async def test_readyz_tells_whether_the_cluster_answers(driver, k8s_control_plane, tmp_path):
    """A cluster that stopped answering is reported, not discovered at the next deployment."""
    assert await driver.reachable() is True
    config = k8s_control_plane.kubeconfig.read_text().replace(k8s_control_plane.server, "https://127.0.0.1:1")
    (tmp_path / "gone").write_text(config)
    assert await KubernetesDriver(str(tmp_path / "gone")).reachable() is False
