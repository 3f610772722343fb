"""deploy/'s RBAC on a real control plane: the deploy service's ServiceAccount, with a token minted
by the TokenRequest API and read the way a pod reads its own (token file, CA, KUBERNETES_SERVICE_*),
deploys into a namespace it manages and is refused, clearly, everywhere else."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes.dynamic import DynamicClient

from services.deploy import driver_info
from services.deploy.cluster import WorkloadSpec
from services.deploy.ingress import IngressSpec, RouteRule
from services.deploy.kube_access import ClusterForbidden, InCluster
from services.deploy.kubernetes import KubernetesDriver
from tests.integration.shop_web import settled, web_spec
from tests.kustomize_builds import OVERLAY, python_build

pytestmark = pytest.mark.integration

ACCOUNT = "system:serviceaccount:gantry:gantry-deploy"
RBAC_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "RoleBinding"}


def install_rbac(api: k8s.ApiClient, managed: str) -> None:
    """Server-side apply the example overlay's account, role, namespaces and bindings, the managed
    namespaces renamed to one of this run's own (they are the installation's choice)."""
    dynamic = DynamicClient(api)
    names = {"staging": managed, "production": f"{managed}-prod"}
    for doc in python_build(OVERLAY):
        if doc["kind"] not in RBAC_KINDS:
            continue
        meta = doc["metadata"]
        if doc["kind"] == "Namespace":
            meta["name"] = names.get(meta["name"], meta["name"])
        if "namespace" in meta:
            meta["namespace"] = names.get(meta["namespace"], meta["namespace"])
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        dynamic.server_side_apply(
            resource, body=doc, name=meta["name"], namespace=meta.get("namespace"), field_manager="installer"
        )


@pytest.fixture(scope="module")
def admin(k8s_control_plane) -> Iterator[k8s.ApiClient]:
    api = kube_config.new_client_from_config(config_file=str(k8s_control_plane.kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="module")
def managed(admin) -> str:
    namespace = f"m-{uuid.uuid4().hex[:8]}"
    install_rbac(admin, namespace)
    return namespace


@pytest.fixture(scope="module")
def pod_credentials(admin, managed, k8s_control_plane, tmp_path_factory) -> InCluster:
    """What the kubelet would mount in the deploy pod: a token of gantry-deploy (TokenRequest) and the CA."""
    request = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    minted = k8s.CoreV1Api(admin).create_namespaced_service_account_token("gantry-deploy", "gantry", request)
    folder: Path = tmp_path_factory.mktemp("serviceaccount")
    (folder / "token").write_text(minted.status.token)
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(k8s_control_plane.port)}
    return InCluster(token_file=str(folder / "token"), ca_file=str(k8s_control_plane.pki / "ca.crt"), environ=environ)


def spec(namespace: str, version: str = "v1", track: str = "stable") -> WorkloadSpec:
    resources = {"db": {"type": "database", "data": {"url": "postgresql://db", "password": "pw"}}}
    return web_spec(namespace, version, replicas=2 if track == "stable" else 1, track=track, resources=resources)


def names(admin: k8s.ApiClient, namespace: str) -> dict[str, set[str]]:
    core, apps, net = k8s.CoreV1Api(admin), k8s.AppsV1Api(admin), k8s.NetworkingV1Api(admin)
    listed: dict[str, Any] = {
        "Deployment": apps.list_namespaced_deployment(namespace),
        "ConfigMap": core.list_namespaced_config_map(namespace, label_selector="app=shop-web"),
        "Secret": core.list_namespaced_secret(namespace, label_selector="app=shop-web"),
        "Service": core.list_namespaced_service(namespace),
        "Ingress": net.list_namespaced_ingress(namespace),
    }
    return {kind: {item.metadata.name for item in found.items} for kind, found in listed.items() if found.items}


async def test_the_account_deploys_the_whole_lifecycle_in_a_managed_namespace(admin, managed, pod_credentials):
    driver = KubernetesDriver(pod_credentials, create_namespaces=False)
    assert await driver.reachable()
    assert driver_info.describe(driver) == {"driver": "kubernetes", "credentials": "in-cluster", "account": ACCOUNT}
    assert (await driver.apply(spec(managed))).state in ("progressing", "succeeded")
    assert (await settled(driver, managed)).state == "succeeded"
    await driver.apply(spec(managed, "v2", track="canary"))
    assert (await settled(driver, managed, "canary")).available == 1
    await driver.apply_ingress(
        IngressSpec("shop", "web", "staging", managed, "nginx", None, (RouteRule("w", "/w/**"),))
    )
    assert names(admin, managed) == {
        "Deployment": {"shop-web", "shop-web-canary"},
        "ConfigMap": {"shop-web-config", "shop-web-canary-config"},
        "Secret": {"shop-web-secret", "shop-web-canary-secret"},
        "Service": {"shop-web"},
        "Ingress": {"shop-web"},
    }
    deployment = k8s.AppsV1Api(admin).read_namespaced_deployment("shop-web", managed)
    assert {f.manager for f in deployment.metadata.managed_fields} >= {"gantry"}

    await driver.delete("shop", "web", "staging", managed, "canary")
    await driver.apply_ingress(IngressSpec("shop", "web", "staging", managed, "nginx", None, ()))  # no route left
    assert set(names(admin, managed)) == {"Deployment", "ConfigMap", "Secret", "Service"}
    await driver.remove("shop", "web", "staging", managed)
    assert names(admin, managed) == {}


async def test_another_namespace_is_forbidden_and_says_why(admin, managed, pod_credentials):
    other = f"o-{uuid.uuid4().hex[:8]}"
    k8s.CoreV1Api(admin).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=other)))
    driver = KubernetesDriver(pod_credentials, create_namespaces=False)
    with pytest.raises(ClusterForbidden) as refused:
        await driver.apply(spec(other))
    message = str(refused.value)
    assert f"namespace {other!r}" in message and ACCOUNT in message
    assert 'cannot patch resource "configmaps"' in message, "the permission that is missing"
    assert "ClusterRole gantry-deployer" in message and "RoleBinding" in message, "and how to grant it"
    assert "HTTP response headers" not in message, "the API server's reason, not the client's dump"
    assert names(admin, other) == {}, "nothing was written there"
    for attempt in (
        driver.status("shop", "web", "staging", other),
        driver.remove("shop", "web", "staging", other),
        driver.apply_ingress(IngressSpec("shop", "web", "staging", other, None, None, (RouteRule("w", "/w/**"),))),
    ):
        with pytest.raises(ClusterForbidden, match=other):
            await attempt


async def test_creating_namespaces_needs_the_optional_component(managed, pod_credentials):
    fresh = f"n-{uuid.uuid4().hex[:8]}"
    driver = KubernetesDriver(pod_credentials, create_namespaces=True)
    with pytest.raises(ClusterForbidden, match='cannot patch resource "namespaces"'):
        await driver.apply(spec(fresh))
    # In a namespace it manages, the same account deploys without touching the Namespace object.
    applied = await KubernetesDriver(pod_credentials, create_namespaces=False).apply(spec(managed, "v3"))
    assert applied.state in ("progressing", "succeeded")
