"""Undeploy on a real control plane (etcd, kube-apiserver, controller-manager, scheduler; kwok
plays the nodes): the driver removes a service's Deployments, ConfigMaps, Secrets, Service and
Ingress, and nothing of its neighbours; the deploy service does it through its REST API and its
deploy.requested chain, after which the resource it used can be deleted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from services.deploy.app import create_app
from services.deploy.cluster import WorkloadSpec
from services.deploy.kubernetes import KubernetesDriver
from tests.integration.conftest import released
from tests.integration.test_deploy_on_kubernetes import (
    DEPLOYER,
    api_ready_for,
    service_settings,  # noqa: F401 - the fixture
)
from tests.support import eventually, running

pytestmark = pytest.mark.integration


class Cluster:
    """The official client's typed APIs, to look at what the driver left."""

    def __init__(self, kubeconfig: str) -> None:
        self.api = kube_config.new_client_from_config(config_file=kubeconfig)
        self.apps, self.core = k8s.AppsV1Api(self.api), k8s.CoreV1Api(self.api)
        self.networking = k8s.NetworkingV1Api(self.api)

    def objects(self, namespace: str, app: str) -> dict[str, list[str]]:
        """The names of each kind labelled ``app`` in the namespace (pods being deleted left out)."""
        selector = f"app={app}"
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        found = {
            "Deployment": self.apps.list_namespaced_deployment(namespace, label_selector=selector).items,
            "ConfigMap": self.core.list_namespaced_config_map(namespace, label_selector=selector).items,
            "Secret": self.core.list_namespaced_secret(namespace, label_selector=selector).items,
            "Service": self.core.list_namespaced_service(namespace, label_selector=selector).items,
            "Ingress": self.networking.list_namespaced_ingress(namespace, label_selector=selector).items,
            "Pod": [p for p in pods if p.metadata.deletion_timestamp is None],
        }
        return {kind: sorted(o.metadata.name for o in items) for kind, items in found.items() if items}

    def add_ingress(self, namespace: str, name: str, app: str) -> None:
        labels = {"app": app, "app.kubernetes.io/managed-by": "gantry"}
        backend = k8s.V1IngressBackend(
            service=k8s.V1IngressServiceBackend(name=app, port=k8s.V1ServiceBackendPort(number=80))
        )
        path = k8s.V1HTTPIngressPath(path="/web", path_type="Prefix", backend=backend)
        rule = k8s.V1IngressRule(http=k8s.V1HTTPIngressRuleValue(paths=[path]))
        body = k8s.V1Ingress(metadata=k8s.V1ObjectMeta(name=name, labels=labels), spec=k8s.V1IngressSpec(rules=[rule]))
        self.networking.create_namespaced_ingress(namespace, body)


@pytest.fixture
def cluster(k8s_control_plane) -> Iterator[Cluster]:
    found = Cluster(str(k8s_control_plane.kubeconfig))
    yield found
    found.api.close()


def spec(namespace: str, service: str, track: str = "stable", replicas: int = 2) -> WorkloadSpec:
    return WorkloadSpec(
        project="shop",
        service=service,
        environment="staging",
        namespace=namespace,
        version="v1",
        image=f"registry.local/shop/{service}:v1",
        replicas=replicas,
        track=track,
        resources={"db": {"type": "database", "data": {"url": "postgresql://db"}}},
    )


async def test_remove_takes_the_whole_service_and_nothing_else(k8s_control_plane, cluster: Cluster) -> None:
    driver = KubernetesDriver(str(k8s_control_plane.kubeconfig))
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    for workload in (spec(namespace, "web"), spec(namespace, "web", "canary", 1), spec(namespace, "api")):
        await driver.apply(workload)
    cluster.add_ingress(namespace, "shop-web", "shop-web")  # the name Gantry gives it
    cluster.add_ingress(namespace, "shop-web-extra", "shop-web")  # found by its labels
    cluster.add_ingress(namespace, "shop-api", "shop-api")

    async def pods_running() -> bool:  # both services' pods made, so the neighbour's stay as they are
        web, api = (len(cluster.objects(namespace, app).get("Pod", [])) for app in ("shop-web", "shop-api"))
        return (web, api) == (3, 2)

    await eventually(pods_running, timeout=60)
    neighbour = cluster.objects(namespace, "shop-api")

    await driver.remove("shop", "web", "staging", namespace)

    async def all_gone() -> bool:
        return cluster.objects(namespace, "shop-web") == {}

    await eventually(all_gone, timeout=60)  # pods go with their Deployment (garbage collection)
    assert await driver.status("shop", "web", "staging", namespace) is None
    assert await driver.status("shop", "web", "staging", namespace, "canary") is None
    assert cluster.objects(namespace, "shop-api") == neighbour
    assert set(neighbour) == {"Deployment", "ConfigMap", "Secret", "Service", "Ingress", "Pod"}
    assert cluster.core.read_namespace(namespace).metadata.name == namespace, "the namespace stays"

    await driver.remove("shop", "web", "staging", namespace)  # already gone: no error
    await driver.remove("shop", "web", "staging", f"t-{uuid.uuid4().hex[:8]}")  # a namespace never made


async def test_undeploy_through_the_deploy_service(service_settings, publish, cluster: Cluster) -> None:  # noqa: F811
    project, service, service_id = "shop", f"web{uuid.uuid4().hex[:5]}", uuid.uuid4().hex
    namespace, app = f"{project}-qa", f"shop-{service}"
    state_url = f"/environments/qa/projects/{project}/services/{service}"
    async with running(create_app(service_settings)) as api:
        await publish(released(service_id, project, service, "v1", "qa"))
        await api_ready_for(api, project, service)
        resource = {"name": f"cfg-{service}", "type": "config", "data": {"LOG_LEVEL": "info"}}
        assert (await api.post("/environments/qa/resources", headers=DEPLOYER, json=resource)).status_code == 201
        body = {"project": project, "service": service, "environment": "qa", "version": "v1"}
        deployed = await api.post("/deployments", headers=DEPLOYER, json=body | {"resources": [resource["name"]]})
        assert deployed.status_code == 202, deployed.text

        async def state(check: Any) -> dict[str, Any] | None:
            found: dict[str, Any] = (await api.get(state_url, headers=DEPLOYER)).json()
            return found if check(found) else None

        async def rolled_out() -> bool:
            history = (await api.get(f"{state_url}/deployments", headers=DEPLOYER)).json()
            return history[0]["state"] == "succeeded"

        await eventually(rolled_out, timeout=60)
        cluster.add_ingress(namespace, app, app)
        removal = await api.delete(state_url, headers=DEPLOYER)
        assert removal.status_code == 202 and removal.json()["action"] == "undeploy", removal.text

        removed = await eventually(lambda: state(lambda s: s["removed"] is not None), timeout=60)
        assert removed["stable"] is None and removed["canary"] is None
        assert removed["removed"]["deployment_id"] == removal.json()["id"]
        history = (await api.get(f"{state_url}/deployments", headers=DEPLOYER)).json()
        assert [(d["action"], d["state"]) for d in history] == [("undeploy", "removed"), ("deploy", "succeeded")]
        freed = await api.delete(f"/environments/qa/resources/{resource['name']}", headers=DEPLOYER)
        assert freed.status_code == 204, freed.text

    async def gone() -> bool:
        return cluster.objects(namespace, app) == {}

    await eventually(gone, timeout=60)
    with pytest.raises(ApiException) as missing:
        cluster.networking.read_namespaced_ingress(app, namespace)
    assert missing.value.status == 404
