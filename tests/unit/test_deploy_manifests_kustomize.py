"""deploy/: the kustomize base and the example overlay, built and checked object by object.

The kustomizations are built twice where possible: by ``kustomize build`` or ``kubectl kustomize``
when either program is installed, and always by a small pure-Python build that understands exactly
the features these files use (resources, namespace, images, replicas, patches, a replacing
secretGenerator). Both builds must agree, and every check runs on each. The settings the pods get
(ConfigMap, Secret, container env) are loaded into the real ``Settings``, so ports and service
addresses are the ones Gantry computes.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared.settings import SERVICES, Settings, is_placeholder

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "base"
OVERLAY = ROOT / "deploy" / "overlays" / "example"
NAMESPACE = "gantry"
Doc = dict[str, Any]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass"}


# --- builds -------------------------------------------------------------------------------------


def _kustomize_program() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def program_build(path: Path) -> list[Doc]:
    program = _kustomize_program()
    assert program is not None
    result = subprocess.run([*program, str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def python_build(path: Path, before: list[Doc] | None = None) -> list[Doc]:
    """A kustomize build limited to the features deploy/ uses; anything else is an error.
    ``before``: the objects a Component (``path``) works on."""
    kustomization = yaml.safe_load((path / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "namespace", "resources", "components"}
    known |= {"images", "replicas", "patches", "secretGenerator"}
    assert set(kustomization) <= known, f"python_build does not know {set(kustomization) - known}"
    docs: list[Doc] = list(before or [])
    for resource in kustomization.get("resources", []):
        target = (path / resource).resolve()
        if target.is_dir():
            docs += python_build(target)
        else:
            docs += [doc for doc in yaml.safe_load_all(target.read_text()) if doc]
    for component in kustomization.get("components", []):  # its resources join, its patches apply
        docs = python_build((path / component).resolve(), docs)
    for generator in kustomization.get("secretGenerator", []):
        assert generator.get("behavior") == "replace", "python_build only replaces existing Secrets"
        values: dict[str, str] = {}
        for env_file in generator.get("envs", []):
            for line in (path / env_file).read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    key, value = line.split("=", 1)
                    values[key.strip()] = value
        secret = _find(docs, "Secret", generator["name"])
        secret.pop("stringData", None)
        secret["type"] = generator.get("type", "Opaque")
        secret["data"] = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
    for patch in kustomization.get("patches", []):
        body = yaml.safe_load((path / patch["path"]).read_text()) if "path" in patch else yaml.safe_load(patch["patch"])
        if isinstance(body, list):  # JSON 6902
            target = patch["target"]
            _json6902(_find(docs, target["kind"], target["name"]), body)
        elif body.get("$patch") == "delete":
            docs.remove(_find(docs, body["kind"], body["metadata"]["name"]))
        else:  # strategic merge, as far as maps go
            _merge(_find(docs, body["kind"], body["metadata"]["name"]), body)
    namespace = kustomization.get("namespace")
    for doc in docs:
        if namespace and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    for replicas in kustomization.get("replicas", []):
        _find(docs, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    return docs


def _find(docs: list[Doc], kind: str, name: str, namespace: str | None = None) -> Doc:
    (doc,) = [
        d
        for d in docs
        if d["kind"] == kind and d["metadata"]["name"] == name and namespace in (None, d["metadata"].get("namespace"))
    ]
    return doc


def _merge(into: Doc, patch: Doc) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, list) and into.get(key) is not None and key not in {"data"}:
            raise AssertionError(f"python_build does not merge lists ({key})")
        else:
            into[key] = copy.deepcopy(value)


def _json6902(doc: Doc, operations: list[Doc]) -> None:
    for operation in operations:
        assert operation["op"] in {"replace", "add"}, f"python_build does not know op {operation['op']}"
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = operation["value"]
        else:
            node[last] = operation["value"]


def _containers(doc: Doc) -> list[Doc]:
    if doc["kind"] != "Deployment":
        return []
    return doc["spec"]["template"]["spec"]["containers"]  # type: ignore[no-any-return]


def _normal(docs: list[Doc]) -> dict[tuple[str, str, str], Doc]:
    """Objects by (kind, namespace, name), Secret values decoded: equal builds give equal results."""
    out = {}
    for doc in docs:
        doc = copy.deepcopy(doc)
        if doc["kind"] == "Secret":
            values = {key: base64.b64decode(value).decode() for key, value in (doc.pop("data", None) or {}).items()}
            values.update(doc.pop("stringData", None) or {})
            doc["values"] = values
        out[(doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])] = doc
    return out


BUILDERS: dict[str, Callable[[Path], list[Doc]]] = {"python": python_build, "kustomize": program_build}


@pytest.fixture(params=list(BUILDERS), scope="module")
def build(request: pytest.FixtureRequest) -> Callable[[Path], list[Doc]]:
    if request.param == "kustomize" and _kustomize_program() is None:
        pytest.skip("neither kustomize nor kubectl is installed: checked with the pure-Python build only")
    return BUILDERS[request.param]


@pytest.fixture(scope="module")
def base(build: Callable[[Path], list[Doc]]) -> list[Doc]:
    return build(BASE)


@pytest.fixture(scope="module")
def overlay(build: Callable[[Path], list[Doc]]) -> list[Doc]:
    return build(OVERLAY)


@pytest.mark.parametrize("path", [BASE, OVERLAY], ids=["base", "overlay"])
def test_the_python_build_agrees_with_kustomize(path: Path) -> None:
    if _kustomize_program() is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    assert _normal(python_build(path)) == _normal(program_build(path))


# --- looking into built objects ----------------------------------------------------------------


def deployment(docs: list[Doc], name: str) -> Doc:
    return _find(docs, "Deployment", f"gantry-{name}")


def container(docs: list[Doc], name: str) -> Doc:
    (only,) = _containers(deployment(docs, name))
    return only


def pod_environment(docs: list[Doc], name: str) -> dict[str, str]:
    """The environment the container starts with: envFrom sources, then env (which wins)."""
    spec = container(docs, name)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(secret_values(docs, source["secretRef"]["name"]))
    env.update({item["name"]: item["value"] for item in spec.get("env", [])})
    return env


def secret_values(docs: list[Doc], name: str) -> dict[str, str]:
    (secret,) = _normal([_find(docs, "Secret", name)]).values()
    return secret["values"]  # type: ignore[no-any-return]


def installed(env: dict[str, str]) -> dict[str, str]:
    """The environment once the operator has put real values in place of the placeholders."""
    real = {"GANTRY_SECRET": "0f" * 32, "GANTRY_GITLAB_TOKEN": "glpat-real"}
    out = dict(env)
    for key, value in env.items():
        if is_placeholder(value):
            out[key] = real.get(key) or value.replace("change-me", "s3cret-pw")
    return out


def settings_of(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("GANTRY_") or key == "KUBECONFIG":
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def container_port(docs: list[Doc], name: str) -> int:
    (port,) = container(docs, name)["ports"]
    assert port["name"] == "http"
    return int(port["containerPort"])


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

    service = _find(base, "Service", f"gantry-{name}")
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
        service = _find(base, "Service", url.hostname or "")
        assert service["metadata"]["name"] == f"gantry-{name}"
        assert url.port == service["spec"]["ports"][0]["port"]


def test_config_and_secret_carry_the_settings(base: list[Doc]) -> None:
    config = _find(base, "ConfigMap", "gantry-config")["data"]
    assert {"GANTRY_KAFKA_BOOTSTRAP", "GANTRY_PUBLIC_URL", "GANTRY_LOG_LEVEL"} <= set(config)
    assert all(isinstance(value, str) for value in config.values())
    assert {"GANTRY_SECRET", "GANTRY_DATABASE_URL"} <= set(secret_values(base, "gantry-secrets"))


def test_ingress_sends_everything_to_the_gateway(base: list[Doc]) -> None:
    ingress = _find(base, "Ingress", "gantry-gateway")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    assert backend["name"] == "gantry-gateway"
    (port,) = _find(base, "Service", "gantry-gateway")["spec"]["ports"]
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
    ingress = _find(overlay, "Ingress", "gantry-gateway")
    assert urlsplit(settings.public_url).hostname == ingress["spec"]["rules"][0]["host"]
    assert settings.hook_url == f"{settings.public_url}/webhooks/gitlab"
