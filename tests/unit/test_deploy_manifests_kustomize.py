"""deploy/: the kustomize base and the example overlay, built and checked object by object.

The kustomizations are built twice where possible: by ``kustomize build`` or ``kubectl kustomize``
when either program is installed, and always by a small pure-Python build that understands exactly
the features these files use (resources, namespace, images, replicas, patches, a replacing
secretGenerator). Both builds must agree, and every check runs on each. The settings the pods get
(ConfigMap, Secret, container env) are loaded into the real ``Settings``, so ports and service
addresses are the ones Gantry computes.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from shared.settings import SERVICES
from tests.kustomize_builds import (
    BASE,
    CLUSTER_SCOPED,
    NAMESPACE,
    OVERLAY,
    Doc,
    container,
    container_port,
    deployment,
    find,
    installed,
    kustomize_program,
    normal,
    pod_environment,
    program_build,
    python_build,
    secret_values,
)
from tests.support import settings_of


@pytest.mark.parametrize("path", [BASE, OVERLAY], ids=["base", "overlay"])
def test_the_python_build_agrees_with_kustomize(path: Path) -> None:
    if kustomize_program() is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    assert normal(python_build(path)) == normal(program_build(path))


# --- the base -----------------------------------------------------------------------------------


def test_every_object_is_well_formed_and_namespaced(base: list[Doc]) -> None:
    kinds = sorted(doc["kind"] for doc in base)
    once = ["Namespace", "ConfigMap", "Secret", "Ingress", "ServiceAccount", "ClusterRole"]
    per_service = ["Deployment", "Service", "PodDisruptionBudget"] * 5
    assert kinds == sorted([*once, *per_service, "NetworkPolicy", "NetworkPolicy"])
    for doc in base:
        assert doc["apiVersion"] and doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "gantry"
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        elif doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE


def test_all_five_services_have_a_deployment_and_a_service(base: list[Doc]) -> None:
    for kind in ("Deployment", "Service"):
        assert {d["metadata"]["name"] for d in base if d["kind"] == kind} == {f"gantry-{n}" for n in SERVICES}


@pytest.mark.parametrize("name", SERVICES)
def test_deployment_runs_its_service(base: list[Doc], name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = container(base, name)
    assert spec["image"] == "gantry:latest"
    assert spec["args"] == [f"services.{name}"]
    assert "command" not in spec  # the image's ENTRYPOINT is `python -m`
    sources = spec["envFrom"]
    assert {"configMapRef": {"name": "gantry-config"}} in sources
    assert {"secretRef": {"name": "gantry-secrets"}} in sources

    settings = settings_of(installed(pod_environment(base, name)), monkeypatch)
    assert settings.host == "0.0.0.0"
    assert settings.port(name) == container_port(base, name)
    mounts = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
    assert str(settings.home) in mounts and "/tmp" in mounts


@pytest.mark.parametrize("name", SERVICES)
def test_deployment_probes_resources_and_security(base: list[Doc], name: str) -> None:
    spec = container(base, name)
    readiness, liveness = spec["readinessProbe"]["httpGet"], spec["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz" and liveness["path"] == "/healthz"
    ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
    for probe in (readiness, liveness):
        assert probe["port"] in ports or probe["port"] in ports.values()
    assert spec["livenessProbe"].get("initialDelaySeconds", 0) > 0 or "startupProbe" in spec

    resources = spec["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]

    pod = deployment(base, name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for mount in spec["volumeMounts"]:
        assert "emptyDir" in volumes[mount["name"]]


@pytest.mark.parametrize("name", SERVICES)
def test_service_selects_its_deployment_pods(base: list[Doc], name: str) -> None:
    dep = deployment(base, name)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == f"gantry-{name}"
    assert labels["app.kubernetes.io/part-of"] == "gantry"
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()

    service = find(base, "Service", f"gantry-{name}")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert service["spec"]["selector"] == selector
    (port,) = service["spec"]["ports"]
    assert port["port"] == container_port(base, name)
    assert port["targetPort"] in ("http", container_port(base, name))
    # No other Deployment's pods match this Service.
    for other in SERVICES:
        if other != name:
            other_labels = deployment(base, other)["spec"]["template"]["metadata"]["labels"]
            assert not service["spec"]["selector"].items() <= other_labels.items()


def test_services_reach_each_other_by_their_kubernetes_services(
    base: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(installed(pod_environment(base, "gateway")), monkeypatch)
    for name in SERVICES:
        url = urlsplit(settings.service_url(name))
        service = find(base, "Service", url.hostname or "")
        assert service["metadata"]["name"] == f"gantry-{name}"
        assert url.port == service["spec"]["ports"][0]["port"]


def test_config_and_secret_carry_the_settings(base: list[Doc]) -> None:
    config = find(base, "ConfigMap", "gantry-config")["data"]
    assert {"GANTRY_KAFKA_BOOTSTRAP", "GANTRY_PUBLIC_URL", "GANTRY_LOG_LEVEL"} <= set(config)
    assert all(isinstance(value, str) for value in config.values())
    assert {"GANTRY_SECRET", "GANTRY_DATABASE_URL"} <= set(secret_values(base, "gantry-secrets"))


def test_ingress_sends_everything_to_the_gateway(base: list[Doc]) -> None:
    ingress = find(base, "Ingress", "gantry-gateway")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    assert backend["name"] == "gantry-gateway"
    (port,) = find(base, "Service", "gantry-gateway")["spec"]["ports"]
    assert backend["port"] in ({"name": port["name"]}, {"number": port["port"]})


# --- the example overlay ------------------------------------------------------------------------


def test_overlay_builds_on_the_base_and_sets_the_image() -> None:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert "../../base" in kustomization["resources"]
    (image,) = kustomization["images"]
    assert image["name"] == "gantry" and image["newName"] and image["newTag"]


def test_overlay_image_and_replicas(overlay: list[Doc]) -> None:
    for name in SERVICES:
        assert container(overlay, name)["image"] == "registry.example.com/gantry:0.1.0"
    replicas = {name: deployment(overlay, name)["spec"].get("replicas", 1) for name in SERVICES}
    assert replicas == {"gateway": 1, "catalog": 1, "versioning": 2, "release": 2, "deploy": 2}


@pytest.mark.parametrize("name", SERVICES)
def test_overlay_settings_are_valid(overlay: list[Doc], name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(installed(pod_environment(overlay, name)), monkeypatch)  # validators run here
    assert settings.kafka_bootstrap and settings.kafka_bootstrap != "kafka:9092"
    assert settings.database_url and settings.database_url.startswith("postgresql+asyncpg://")
    assert settings.secret
    assert settings.public_url and settings.public_url.startswith("https://")
    ingress = find(overlay, "Ingress", "gantry-gateway")
    assert urlsplit(settings.public_url).hostname == ingress["spec"]["rules"][0]["host"]
    assert settings.hook_url == f"{settings.public_url}/webhooks/gitlab"
