"""The test control plane runs workloads: ReplicaSets, the scheduler and kwok's fake kubelets all work."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from kubernetes import client, config

from tests.harness.k8s_control_plane import ControlPlane

pytestmark = pytest.mark.integration

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    """Poll ``probe`` until it returns something truthy, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {last!r}")


@pytest.fixture
def api(k8s_control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=str(k8s_control_plane.kubeconfig)) as api_client:
        yield api_client


@pytest.fixture
def namespace(api: client.ApiClient, unique_id: str) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = f"gantry-{unique_id}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def deployment(name: str, replicas: int) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                # kwok never pulls or runs the image, so any name will do.
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/gantry/demo:1.0"}]},
            },
        },
    }


def rolled_out(apps: client.AppsV1Api, namespace: str, name: str, replicas: int) -> client.V1Deployment | None:
    dep = apps.read_namespaced_deployment(name, namespace)
    status = dep.status
    done = (
        (status.observed_generation or 0) >= dep.metadata.generation
        and status.replicas == replicas
        and status.available_replicas == replicas
        and status.updated_replicas == replicas
    )
    return dep if done else None


def live_pods(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [pod for pod in pods if pod.metadata.deletion_timestamp is None]


def test_deployment_runs_on_kwok_nodes_and_scales(
    k8s_control_plane: ControlPlane, api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    print(f"\ncontrol plane ready (processes started -> nodes Ready) in {k8s_control_plane.startup_seconds:.1f} s")

    began = time.monotonic()
    apps.create_namespaced_deployment(namespace, deployment("demo", 3))
    dep = wait_for("3 available replicas", lambda: rolled_out(apps, namespace, "demo", 3))
    print(f"3-replica Deployment available in {time.monotonic() - began:.2f} s")
    assert dep.status.ready_replicas == 3

    pods = live_pods(core, namespace, "demo")
    assert len(pods) == 3
    for pod in pods:
        assert pod.status.phase == "Running"
        assert pod.spec.node_name in k8s_control_plane.node_names
        assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
        assert pod.status.pod_ip  # kwok assigns one from its pod CIDR

    began = time.monotonic()
    apps.patch_namespaced_deployment_scale("demo", namespace, {"spec": {"replicas": 1}})
    wait_for("scale down to 1", lambda: rolled_out(apps, namespace, "demo", 1))

    def one_pod_left() -> list[client.V1Pod] | None:
        pods = live_pods(core, namespace, "demo")
        return pods if len(pods) == 1 else None

    remaining = wait_for("one pod left", one_pod_left)
    print(f"scaled to 1 in {time.monotonic() - began:.2f} s")
    assert remaining[0].status.phase == "Running"
