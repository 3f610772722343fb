"""The Kubernetes objects of a deployment, rendered in one place.

``render_objects`` is the single source of what Gantry puts in a cluster: the Kubernetes driver
(``kubernetes.py``) server-side-applies exactly these objects, and the embedded driver
(``rendered.py``) writes them to ``<root>/<environment>/<namespace>/<workload>.yaml`` for
``kubectl`` or GitOps. The drivers' interface is in ``cluster.py``.

Per workload (one service, one track) the objects are, in this order:

- ``Namespace`` ``<namespace>`` and ``Service`` ``<app>`` (selector: ``app`` only): shared by the
  ``stable`` and ``canary`` tracks and rendered identically for both, so the Service balances
  over both tracks in proportion to their replicas. Deleting one track must not delete them
  (``SHARED_KINDS``).
- ``ConfigMap`` ``<workload>-config`` and ``Secret`` ``<workload>-secret``: the data of the
  deployment's resources as environment variables ``<RESOURCE>_<KEY>`` (upper case, other
  characters as ``_``). A key goes to the Secret when its name contains password, passwd,
  secret, token, credential, api_key/apikey or private_key, or when it is ``url``, ``uri`` or
  ``dsn`` of a ``database`` resource (such URLs usually carry the credentials), or when the
  resource holds it secret (its ``secret`` keys: ``secrecy.py``); everything else goes to the
  ConfigMap. Both always exist (possibly empty) and feed ``envFrom``.
- ``Deployment`` ``<workload>``: selector ``app`` + ``track``; pods labelled with ``version``;
  one container listening on ``port`` (named ``http``) with a readiness probe ``GET /healthz``.

``app`` is ``workload_name(project, service)``; ``<workload>`` is
``workload_name(project, service, track)`` (``…-canary`` for the canary track).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from services.deploy.cluster import WorkloadSpec
from shared.naming import DNS1123_LABEL, label_value, suffixed_name, workload_name
from shared.yaml_text import dump_blocks

MANAGED_BY = {"app.kubernetes.io/managed-by": "gantry"}
SHARED_KINDS = ("Namespace", "Service")
HEADER = "# Rendered by Gantry — apply with kubectl apply --server-side -f"
HEALTH_PATH = "/healthz"
_SECRET_KEY = re.compile(r"password|passwd|secret|token|credential|api_?key|private_?key", re.IGNORECASE)
_DATABASE_URL_KEYS = {"url", "uri", "dsn"}


def env_name(resource: str, key: str) -> str:
    """The variable for ``key`` of ``resource``: ``orders-db``, ``url`` → ``ORDERS_DB_URL``."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", f"{resource}_{key}").strip("_").upper()
    return f"R_{name}" if not name or name[0].isdigit() else name


def is_secret_key(resource_type: str, key: str) -> bool:
    """Whether a resource data key goes to the Secret (see the module docstring)."""
    if _SECRET_KEY.search(key):
        return True
    return resource_type == "database" and key.lower() in _DATABASE_URL_KEYS


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


def split_resource_env(
    resources: dict[str, dict[str, Any]],
) -> tuple[dict[str, str], dict[str, str]]:
    """``(config, secret)`` environment variables from the resources' data."""
    config: dict[str, str] = {}
    secret: dict[str, str] = {}
    origin: dict[str, str] = {}
    for resource, body in sorted(resources.items()):
        data = body.get("data") or {}
        if not isinstance(data, dict):
            raise ValueError(  # noqa: TRY004 - callers map ValueError to a 422
                f"resource {resource!r}: 'data' must be a mapping of keys to values"
            )
        for key, value in sorted(data.items()):
            name = env_name(resource, str(key))
            if name in origin:
                raise ValueError(
                    f"resources {origin[name]} and {resource}.{key} both map to the "
                    f"environment variable {name}: rename one of them"
                )
            origin[name] = f"{resource}.{key}"
            held_secret = key in (body.get("secret") or ()) or is_secret_key(str(body.get("type", "")), str(key))
            target = secret if held_secret else config
            target[name] = _text(value)
    return config, secret


def _check(spec: WorkloadSpec) -> None:
    if spec.replicas < 1:
        raise ValueError(f"replicas must be at least 1 (got {spec.replicas}): 0 is refused")
    if not (1 <= spec.port <= 65535):
        raise ValueError(f"port must be between 1 and 65535 (got {spec.port})")
    if len(spec.namespace) > 63 or not DNS1123_LABEL.match(spec.namespace):
        raise ValueError(
            f"namespace {spec.namespace!r} is not a DNS-1123 label "
            "(lower-case letters, digits and '-', at most 63 characters)"
        )
    if not spec.image.strip():
        raise ValueError("image must not be empty")


def _metadata(
    name: str, namespace: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _annotations(spec: WorkloadSpec) -> dict[str, str]:
    return {
        "gantry/project": spec.project,
        "gantry/service": spec.service,
        "gantry/environment": spec.environment,
        "gantry/version": spec.version,
    }


def _deployment(
    spec: WorkloadSpec, workload: str, app: str, env_from: list[dict[str, Any]], progress_deadline_seconds: int
) -> dict[str, Any]:
    selector = {"app": app, "track": spec.track}
    pod_labels = {**selector, "version": label_value(spec.version), **MANAGED_BY}
    container = {
        "name": "app",
        "image": spec.image,
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "envFrom": env_from,
        "readinessProbe": {"httpGet": {"path": HEALTH_PATH, "port": "http"}, "periodSeconds": 5, "failureThreshold": 3},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(workload, spec.namespace, dict(pod_labels), _annotations(spec)),
        "spec": {
            "replicas": spec.replicas,
            "progressDeadlineSeconds": progress_deadline_seconds,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": _annotations(spec)},
                "spec": {"containers": [container]},
            },
        },
    }


def render_objects(spec: WorkloadSpec, *, progress_deadline_seconds: int = 600) -> list[dict[str, Any]]:
    """Namespace, ConfigMap, Secret, Deployment and Service of ``spec`` (see the module doc).

    Raises ``ValueError`` for replicas < 1, a bad port or namespace, an empty image, names
    without any letter or digit, or two resource keys mapping to one environment variable.
    """
    _check(spec)
    app = workload_name(spec.project, spec.service)
    workload = workload_name(spec.project, spec.service, spec.track)
    config_name, secret_name = suffixed_name(workload, "config"), suffixed_name(workload, "secret")
    config, secret = split_resource_env(spec.resources)
    track_labels = {"app": app, "track": spec.track, **MANAGED_BY}
    shared_labels = {"app": app, **MANAGED_BY}
    secret_data = {k: base64.b64encode(v.encode()).decode("ascii") for k, v in secret.items()}
    env_from = [{"configMapRef": {"name": config_name}}, {"secretRef": {"name": secret_name}}]
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.namespace, "labels": dict(MANAGED_BY)}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(config_name, spec.namespace, track_labels),
            "data": config,
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": _metadata(secret_name, spec.namespace, track_labels),
            "data": secret_data,
        },
        _deployment(spec, workload, app, env_from, progress_deadline_seconds),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(app, spec.namespace, shared_labels),
            "spec": {
                "selector": {"app": app},
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    ]


def render_yaml(objects: list[dict[str, Any]], filename: str) -> str:
    """Multi-document YAML with sorted keys and the Gantry header: same objects, same bytes."""
    return f"{HEADER} {filename}\n{dump_blocks(objects)}"
