"""Gantry's own manifests (deploy/) are valid Kubernetes: the API server accepts every object of
the base and of the example overlay in a server-side dry run."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes.dynamic import DynamicClient

from tests.kustomize_builds import python_build

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize("kustomization", ["base", "overlays/example"])
def test_server_side_dry_run_accepts_every_object(k8s_control_plane, kustomization: str) -> None:
    docs = python_build(DEPLOY / kustomization)
    api = kube_config.new_client_from_config(config_file=str(k8s_control_plane.kubeconfig))
    try:
        client = DynamicClient(api)
        namespaces = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Namespace"}
        for name in namespaces:  # a dry-run Namespace is not created, so its objects need a real one
            try:
                k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
            except k8s.ApiException as exc:
                if exc.status != 409:  # it exists already: fine; anything else is a failure
                    raise
        accepted = []
        for doc in docs:
            resource = client.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            answer = client.server_side_apply(
                resource,
                body=doc,
                name=doc["metadata"]["name"],
                namespace=doc["metadata"].get("namespace"),
                field_manager="gantry-manifest-check",
                dry_run="All",
            )
            accepted.append((answer.kind, answer.metadata.name))
    finally:
        api.close()
    kinds = {kind for kind, _ in accepted}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "Ingress"} <= kinds
    assert len([1 for kind, _ in accepted if kind == "Deployment"]) == 5
