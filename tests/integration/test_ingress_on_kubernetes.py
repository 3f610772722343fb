"""Gateway routes as Ingress objects on the test control plane: the API server takes what the
renderer makes (ingress-nginx regex paths and portable paths), a route change reaches the
Ingress, and a deleted route removes its rule, the Ingress going with the last one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from services.deploy.app import create_app
from services.deploy.ingress import IngressSpec, RouteRule
from services.deploy.kubernetes import KubernetesDriver
from shared.events import Envelope, EnvironmentChanged, RouteChanged, Topic, new_event
from tests.integration.conftest import released
from tests.integration.test_deploy_on_kubernetes import (
    api_ready_for,
    service_settings,  # noqa: F401 - the fixture: deploy's settings with the control plane's kubeconfig
)
from tests.support import eventually, running, token

pytestmark = pytest.mark.integration
DEPLOYER = token("deploy-admin", user="dora")


@pytest.fixture
def networking(k8s_control_plane) -> Any:
    api = kube_config.new_client_from_config(config_file=str(k8s_control_plane.kubeconfig))
    yield k8s.NetworkingV1Api(api), k8s.CoreV1Api(api)
    api.close()


def read_ingress(networking: Any, name: str, namespace: str) -> Any | None:
    try:
        return networking[0].read_namespaced_ingress(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def ingress_paths(ingress: Any) -> list[tuple[str, str]]:
    return [(p.path_type, p.path) for p in ingress.spec.rules[0].http.paths]


async def test_the_api_server_takes_both_kinds_of_paths(k8s_control_plane, networking) -> None:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    networking[1].create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    driver = KubernetesDriver(str(k8s_control_plane.kubeconfig))
    routes = (RouteRule("orders", "/orders/**"), RouteRule("items", "/shop/*/items"), RouteRule("x", "/x", False))
    spec = IngressSpec("shop", "web", "staging", namespace, "nginx", "staging.example.org", routes)

    await driver.apply_ingress(spec)
    ingress = read_ingress(networking, "shop-web", namespace)
    assert ingress.spec.ingress_class_name == "nginx" and ingress.spec.rules[0].host == "staging.example.org"
    assert ingress_paths(ingress) == [
        ("ImplementationSpecific", "/(shop)/([^/]+/items)$"),
        ("ImplementationSpecific", "/(orders)(?:/|$)(.*)"),
        ("ImplementationSpecific", "/()(x)$"),
    ]
    assert ingress.metadata.annotations["nginx.ingress.kubernetes.io/rewrite-target"] == "/$2"
    assert ingress.metadata.managed_fields[0].manager == "gantry"

    await driver.apply_ingress(IngressSpec("shop", "web", "staging", namespace, "traefik", None, routes))
    ingress = read_ingress(networking, "shop-web", namespace)
    assert ingress_paths(ingress) == [("Prefix", "/orders"), ("Exact", "/x")]
    assert ingress.spec.rules[0].host is None
    annotations = ingress.metadata.annotations
    assert "nginx.ingress.kubernetes.io/rewrite-target" not in annotations, "applying again drops what is gone"
    assert (annotations["gantry/routes-not-served"], annotations["gantry/prefix-kept"]) == ("items", "orders")

    await driver.apply_ingress(IngressSpec("shop", "web", "staging", namespace, "nginx", None, ()))
    assert read_ingress(networking, "shop-web", namespace) is None
    await driver.apply_ingress(IngressSpec("shop", "web", "staging", namespace, "nginx", None, ()))  # gone already


Send = Callable[[Envelope], Awaitable[None]]


@pytest.fixture
async def send(embedded_kafka: str) -> AsyncIterator[Send]:
    """Publish any event, keyed as its producer keys it (a route by name, an environment by code)."""
    producer = AIOKafkaProducer(bootstrap_servers=embedded_kafka, acks="all")
    await producer.start()

    async def publish(envelope: Envelope) -> None:
        key = envelope.data.get("service_id") or envelope.subject
        await producer.send_and_wait(envelope.type, envelope.model_dump_json().encode(), key=key.encode())

    yield publish
    await producer.stop()


def route(name: str, path: str, target: str, change: str = "created") -> Envelope:
    data = RouteChanged(name=name, path=path, service=target, change=change)  # type: ignore[arg-type]
    return new_event(Topic.ROUTE_CHANGED, data, source="gantry/gateway", subject=name)


async def test_a_route_change_reaches_the_ingress_and_a_deleted_route_its_rule(
    service_settings,  # noqa: F811 - the fixture imported above
    send,
    networking,
) -> None:
    project, service, service_id = f"p{uuid.uuid4().hex[:6]}", "web", uuid.uuid4().hex
    namespace, name = f"{project}-qa", f"{project}-web"
    environment = EnvironmentChanged(
        code="qa",
        name="QA",
        tier="test",
        namespace=namespace,
        ingress_class="nginx",
        ingress_host="qa.example.org",
        change="created",
    )
    async with running(create_app(service_settings)) as api:
        await send(new_event(Topic.ENVIRONMENT_CHANGED, environment, source="gantry/release", subject="qa"))
        await send(route("orders", "/orders/**", f"{project}/{service}"))  # before the service runs
        await send(released(service_id, project, service, "v1", "qa"))
        await api_ready_for(api, project, service)
        answer = await api.post(
            "/deployments",
            headers=DEPLOYER,
            json={"project": project, "service": service, "environment": "qa", "version": "v1", "resources": []},
        )
        assert answer.status_code == 202, answer.text

        async def paths_are(*expected: str) -> None:
            async def probe() -> bool:
                ingress = read_ingress(networking, name, namespace)
                return ingress is not None and [p for _t, p in ingress_paths(ingress)] == list(expected)

            await eventually(probe, timeout=30, interval=0.1)

        await paths_are("/(orders)(?:/|$)(.*)")  # applied with the deployment
        ingress = read_ingress(networking, name, namespace)
        assert (ingress.spec.ingress_class_name, ingress.spec.rules[0].host) == ("nginx", "qa.example.org")
        assert ingress.spec.rules[0].http.paths[0].backend.service.name == name

        await send(route("orders", "/shop/orders/**", f"{project}/{service}", "updated"))
        await send(route("export", "/export", service_id))
        await paths_are("/(export)()$", "/(shop/orders)(?:/|$)(.*)")

        await send(route("orders", "/shop/orders/**", f"{project}/{service}", "deleted"))
        await paths_are("/(export)()$")
        await send(route("export", "/export", service_id, "deleted"))

        async def gone() -> bool:
            return read_ingress(networking, name, namespace) is None

        await eventually(gone, timeout=30, interval=0.1)
