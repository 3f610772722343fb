"""deploy/'s kustomizations built two ways, and helpers that look into the built objects.

Built by ``kustomize build`` or ``kubectl kustomize`` when either program is installed, and always by
a small pure-Python build that understands exactly the features these files use (resources,
namespace, images, replicas, patches, a replacing secretGenerator). The manifests' unit tests
(``tests/unit/conftest.py`` gives them the ``build``, ``base`` and ``overlay`` fixtures) and the
control-plane tests (``tests/integration/test_kubernetes_rbac.py``, ``test_deploy_dry_run.py``) use it.
"""

from __future__ import annotations

import base64
import copy
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from shared.settings import is_placeholder

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "deploy" / "base"
OVERLAY = ROOT / "deploy" / "overlays" / "example"
NAMESPACE = "gantry"
Doc = dict[str, Any]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass"}


# --- builds -------------------------------------------------------------------------------------


def kustomize_program() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def program_build(path: Path) -> list[Doc]:
    program = kustomize_program()
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
        secret = find(docs, "Secret", generator["name"])
        secret.pop("stringData", None)
        secret["type"] = generator.get("type", "Opaque")
        secret["data"] = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
    for patch in kustomization.get("patches", []):
        body = yaml.safe_load((path / patch["path"]).read_text()) if "path" in patch else yaml.safe_load(patch["patch"])
        if isinstance(body, list):  # JSON 6902
            target = patch["target"]
            _json6902(find(docs, target["kind"], target["name"]), body)
        elif body.get("$patch") == "delete":
            docs.remove(find(docs, body["kind"], body["metadata"]["name"]))
        else:  # strategic merge, as far as maps go
            _merge(find(docs, body["kind"], body["metadata"]["name"]), body)
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
        find(docs, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    return docs


def find(docs: list[Doc], kind: str, name: str, namespace: str | None = None) -> Doc:
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


def normal(docs: list[Doc]) -> dict[tuple[str, str, str], Doc]:
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


# --- looking into built objects ----------------------------------------------------------------


def deployment(docs: list[Doc], name: str) -> Doc:
    return find(docs, "Deployment", f"gantry-{name}")


def container(docs: list[Doc], name: str) -> Doc:
    (only,) = _containers(deployment(docs, name))
    return only


def pod_environment(docs: list[Doc], name: str) -> dict[str, str]:
    """The environment the container starts with: envFrom sources, then env (which wins)."""
    spec = container(docs, name)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(secret_values(docs, source["secretRef"]["name"]))
    env.update({item["name"]: item["value"] for item in spec.get("env", [])})
    return env


def secret_values(docs: list[Doc], name: str) -> dict[str, str]:
    (secret,) = normal([find(docs, "Secret", name)]).values()
    return secret["values"]  # type: ignore[no-any-return]


def installed(env: dict[str, str]) -> dict[str, str]:
    """The environment once the operator has put real values in place of the placeholders."""
    real = {"GANTRY_SECRET": "0f" * 32, "GANTRY_GITLAB_TOKEN": "glpat-real"}
    out = dict(env)
    for key, value in env.items():
        if is_placeholder(value):
            out[key] = real.get(key) or value.replace("change-me", "s3cret-pw")
    return out


def container_port(docs: list[Doc], name: str) -> int:
    (port,) = container(docs, name)["ports"]
    assert port["name"] == "http"
    return int(port["containerPort"])
