"""How the Kubernetes driver reaches the API server, and how a refusal reads.

Two ways in: a kubeconfig file (``GANTRY_KUBECONFIG``), or, in a pod, the pod's ServiceAccount
(``InCluster``): the API server from ``KUBERNETES_SERVICE_HOST``/``_PORT``, the token and CA
where the kubelet mounts them. The client reads the token file again every minute, so projected
tokens that the kubelet rotates keep working. A 403 becomes ``ClusterForbidden``, whose message
names the namespace, the account and the permission the cluster refused.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration
from kubernetes.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_HOST_ENV_NAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)
from kubernetes.dynamic.exceptions import ForbiddenError

DEPLOYER_ROLE = "gantry-deployer"  # the ClusterRole of deploy/base/rbac.yaml, bound per namespace


@dataclass(frozen=True)
class InCluster:
    """The pod's ServiceAccount (paths are parameters so that tests can point them elsewhere)."""

    token_file: str = SERVICE_TOKEN_FILENAME
    ca_file: str = SERVICE_CERT_FILENAME
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    @staticmethod
    def detected(environ: Mapping[str, str] = os.environ) -> bool:
        """Running in a pod that was given a ServiceAccount token."""
        return bool(environ.get(SERVICE_HOST_ENV_NAME)) and Path(SERVICE_TOKEN_FILENAME).is_file()

    def client(self) -> ApiClient:
        configuration = Configuration()
        InClusterConfigLoader(
            token_filename=self.token_file, cert_filename=self.ca_file, environ=self.environ
        ).load_and_set(configuration)
        return ApiClient(configuration)

    def account(self) -> str:
        """``system:serviceaccount:<namespace>:<name>``, read from the token ("" when unreadable)."""
        try:
            payload = Path(self.token_file).read_text(encoding="utf-8").strip().split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return str(claims.get("sub", ""))
        except (OSError, IndexError, ValueError, AttributeError):
            return ""


def new_client(source: str | InCluster) -> ApiClient:
    """An API client from a kubeconfig path, or from the pod's ServiceAccount."""
    if isinstance(source, InCluster):
        return source.client()
    client: ApiClient = kube_config.new_client_from_config(config_file=source)
    return client


class ClusterForbidden(PermissionError):
    """The API server refused an action for lack of permission (HTTP 403)."""


def forbidden(exc: ForbiddenError, namespace: str, account: str) -> ClusterForbidden:
    """A refusal a person can act on: which namespace, which account, which permission, and the fix."""
    try:
        said = str(json.loads(exc.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        said = str(exc.reason or exc.status)
    who = f" for {account}" if account else ""
    return ClusterForbidden(
        f"the cluster refused namespace {namespace!r}{who}: {said}. Gantry deploys only into the "
        f"namespaces where its account is bound to the ClusterRole {DEPLOYER_ROLE} "
        f"(a RoleBinding in {namespace!r}, see deploy/README.md)"
    )
