"""deploy/: the deploy service's account and rights, placeholders refused, disruption budgets and
network policies, checked on the built objects (the builds of tests/kustomize_builds.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from services.deploy.app import build_driver
from services.deploy.cluster import WorkloadSpec
from services.deploy.ingress import IngressSpec, RouteRule, render_ingress
from services.deploy.manifests import render_objects
from shared.settings import SERVICES
from tests.kustomize_builds import (
    NAMESPACE,
    OVERLAY,
    ROOT,
    Doc,
    deployment,
    find,
    installed,
    pod_environment,
)
from tests.support import settings_of

COMPONENT = ROOT / "deploy" / "components" / "namespace-creation"
ACCOUNT = {"kind": "ServiceAccount", "name": "gantry-deploy", "namespace": NAMESPACE}
PLURAL = {"Ingress": "ingresses"}


@pytest.fixture(scope="module")
def with_component(build: Callable[[Path], list[Doc]], tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    """The example overlay with the namespace-creation component, as the overlay's comment says."""
    folder = tmp_path_factory.mktemp("overlay")
    kustomization = {
        "resources": [os.path.relpath(OVERLAY, folder)],
        "components": [os.path.relpath(COMPONENT, folder)],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return build(folder)


def pod(docs: list[Doc], name: str) -> Doc:
    return deployment(docs, name)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


# --- placeholders -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_the_examples_placeholders_are_refused_at_start(
    base: list[Doc], overlay: list[Doc], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for docs in (base, overlay):
        env = pod_environment(docs, name)
        with pytest.raises(ValidationError, match="GANTRY_SECRET holds a placeholder from the examples"):
            settings_of(env, monkeypatch)
        with pytest.raises(ValidationError, match="GANTRY_DATABASE_URL holds a placeholder") as refused:
            settings_of(env | {"GANTRY_SECRET": "0f" * 32}, monkeypatch)
        assert "change-me" not in str(refused.value).replace("('change-me')", ""), "the value is never echoed"
        settings_of(installed(env), monkeypatch)  # real values: accepted


# --- the deploy service's account ---------------------------------------------------------------


def test_only_the_deploy_pods_carry_a_token(base: list[Doc], monkeypatch: pytest.MonkeyPatch) -> None:
    account = find(base, "ServiceAccount", "gantry-deploy")
    assert account["metadata"]["namespace"] == NAMESPACE
    assert account.get("automountServiceAccountToken") is False, "a token only where a pod asks for it"
    assert pod(base, "deploy")["serviceAccountName"] == "gantry-deploy"
    assert pod(base, "deploy")["automountServiceAccountToken"] is True
    for name in set(SERVICES) - {"deploy"}:
        assert pod(base, name)["automountServiceAccountToken"] is False
        assert pod(base, name).get("serviceAccountName", "default") == "default"

    settings = settings_of(installed(pod_environment(base, "deploy")), monkeypatch)
    assert (settings.kubernetes, settings.kubernetes_create_namespaces) == ("in-cluster", False)
    # Outside a pod, the in-cluster setting stops the service at once instead of rendering files.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(RuntimeError, match="GANTRY_KUBERNETES=in-cluster, but this process has no ServiceAccount"):
        build_driver(settings)


def _everything_the_driver_writes() -> list[dict[str, Any]]:
    workload = WorkloadSpec("shop", "web", "staging", "staging", "1.0.0", "registry/shop/web:1.0.0", 2)
    route = IngressSpec("shop", "web", "staging", "staging", routes=(RouteRule("web", "/web/**"),))
    return [*render_objects(workload), *render_objects(WorkloadSpec(**{**workload.__dict__, "track": "canary"}))] + [
        render_ingress(route) or {}
    ]


def _granted(role: Doc, api_version: str, kind: str) -> set[str]:
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    plural = PLURAL.get(kind, kind.lower() + "s")
    verbs: set[str] = set()
    for rule in role["rules"]:
        if group in rule["apiGroups"] and plural in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def test_the_deployer_role_covers_every_object_the_driver_writes_and_no_more(base: list[Doc]) -> None:
    role = find(base, "ClusterRole", "gantry-deployer")
    written = {(obj["apiVersion"], obj["kind"]) for obj in _everything_the_driver_writes()}
    assert ("networking.k8s.io/v1", "Ingress") in written and ("v1", "Namespace") in written
    for api_version, kind in written - {("v1", "Namespace")}:  # namespaces: the optional component
        # apply = create + patch; undeploy lists by label and deletes; status reads the Deployment
        needed = {"create", "patch", "list", "delete"} | ({"get"} if kind == "Deployment" else set())
        assert _granted(role, api_version, kind) == needed, kind
    assert not _granted(role, "v1", "Namespace")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert not {"namespaces", "roles", "rolebindings", "clusterroles", "pods"} & set(rule["resources"])


def test_the_overlay_binds_the_deployer_in_each_managed_namespace_only(overlay: list[Doc]) -> None:
    bindings = [doc for doc in overlay if doc["kind"] == "RoleBinding"]
    managed = {doc["metadata"]["name"] for doc in overlay if doc["kind"] == "Namespace"} - {NAMESPACE}
    assert managed == {"staging", "production"}
    assert {doc["metadata"]["namespace"] for doc in bindings} == managed
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "gantry-deployer",
        }
        assert binding["subjects"] == [ACCOUNT]
    assert not [doc for doc in overlay if doc["kind"] == "ClusterRoleBinding"], "no right outside those namespaces"
    assert find(overlay, "Deployment", "gantry-deploy")["metadata"]["namespace"] == NAMESPACE


def test_namespace_creation_is_a_component_that_turns_it_on(
    with_component: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(installed(pod_environment(with_component, "deploy")), monkeypatch)
    assert settings.kubernetes_create_namespaces is True
    creator = find(with_component, "ClusterRole", "gantry-namespaces")
    assert _granted(creator, "v1", "Namespace") == {"create", "patch"}
    bound = {
        doc["roleRef"]["name"]
        for doc in with_component
        if doc["kind"] == "ClusterRoleBinding" and doc["subjects"] == [ACCOUNT]
    }
    assert bound == {"gantry-namespaces", "gantry-deployer"}


# --- disruption budgets and network policies ----------------------------------------------------


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    return bool(selector.get("matchLabels")) and selector["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_a_disruption_budget_that_never_blocks_a_drain(base: list[Doc], name: str) -> None:
    labels = deployment(base, name)["spec"]["template"]["metadata"]["labels"]
    (budget,) = [
        doc for doc in base if doc["kind"] == "PodDisruptionBudget" and _selects(doc["spec"]["selector"], labels)
    ]
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"] == {"maxUnavailable": 1, "selector": budget["spec"]["selector"]}


@pytest.mark.parametrize("name", SERVICES)
def test_only_the_gateway_is_open_beyond_gantrys_own_pods(base: list[Doc], name: str) -> None:
    labels = deployment(base, name)["spec"]["template"]["metadata"]["labels"]
    policies = [doc for doc in base if doc["kind"] == "NetworkPolicy" and _selects(doc["spec"]["podSelector"], labels)]
    assert policies, "every Gantry pod is selected, so what no policy allows is refused"
    sources = [peer for policy in policies for rule in policy["spec"]["ingress"] for peer in rule.get("from", [{}])]
    open_to_all = [rule for policy in policies for rule in policy["spec"]["ingress"] if "from" not in rule]
    if name == "gateway":
        assert [rule["ports"] for rule in open_to_all] == [[{"port": "http", "protocol": "TCP"}]]
    else:
        assert not open_to_all
        assert sources == [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "gantry"}}}]
