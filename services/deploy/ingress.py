"""A service's gateway routes as one Kubernetes Ingress per environment, rendered in one place.

``render_ingress`` is what both cluster drivers put in the cluster or on disk (``kubernetes.py``
server-side-applies it, ``rendered.py`` writes ``<app>.ingress.yaml`` beside the workload's file).
The Ingress is named like the service's Kubernetes Service (``<app>``), lives in the
environment's namespace, takes ``ingressClassName`` and the rule's host from the environment
(``ingress_class``, ``ingress_host``; left out when not set: the cluster's default class, any
host), and sends every path to the Service's port 80.

Paths, by controller (``domain.ingress_dialect``):

- ingress-nginx (a class whose name contains ``nginx``): every route exactly as the gateway
  matches it, strip-prefix included. Each Ant path becomes a regular expression
  (``pathType: ImplementationSpecific``, ``use-regex``) whose second group is what the service
  receives, and ``rewrite-target: /$2`` forwards it: ``/shop/**`` with strip-prefix is
  ``/(shop)(?:/|$)(.*)``, so ``/shop/a/b`` reaches the service as ``/a/b``; without it,
  ``/()(shop(?:/.*)?)$`` keeps the whole path. ``*`` is ``[^/]+``.
- any other controller (or no class): the portable path types. ``/shop/**`` is ``Prefix /shop``,
  a path without wildcards ``Exact``. Two things cannot be said portably, and the Ingress names the
  routes they concern in annotations instead of pretending: a path with ``*`` in it is not served
  (``gantry/routes-not-served``), and strip-prefix is not applied, the service receives the whole
  path (``gantry/prefix-kept``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.deploy.domain import IngressDialect, ingress_dialect
from shared.ant_path import literal_prefix, segments
from shared.naming import workload_name

SERVICE_PORT = 80  # the port of the Service manifests.render_objects makes
MANAGED_BY = {"app.kubernetes.io/managed-by": "gantry"}
NGINX = "nginx.ingress.kubernetes.io"
NOT_SERVED = "gantry/routes-not-served"
PREFIX_KEPT = "gantry/prefix-kept"


@dataclass(frozen=True)
class RouteRule:
    """One gateway route of the service: its name, Ant-style path and strip-prefix flag."""

    name: str
    path: str
    strip_prefix: bool = True


@dataclass(frozen=True)
class IngressSpec:
    """What one service's Ingress in one environment is made of; no routes: no Ingress."""

    project: str
    service: str
    environment: str
    namespace: str
    ingress_class: str | None = None
    host: str | None = None
    routes: tuple[RouteRule, ...] = ()

    @property
    def name(self) -> str:
        return workload_name(self.project, self.service)


def nginx_path(path: str, strip_prefix: bool) -> str:
    """The regular expression ingress-nginx matches ``path`` with; group 2 is what is forwarded."""
    head = literal_prefix(path) if strip_prefix else ""
    rest = segments(path)[len(segments(head)) if head else 0 :]
    if head and not rest:  # an exact path, stripped whole: the service receives "/"
        return f"/({_literal(head[1:])})()$"
    if head and rest == ["**"]:
        return f"/({_literal(head[1:])})(?:/|$)(.*)"
    if not head and rest == ["**"]:
        return "/()(.*)"
    return f"/({_literal(head[1:])})" + ("/" if head else "") + f"({_pattern(rest)})$"


def _literal(text: str) -> str:
    return text.replace(".", r"\.")  # the only regex character a path segment may hold


def _pattern(rest: list[str]) -> str:
    tail = "(?:/.*)?" if rest[-1] == "**" else ""
    body = rest[:-1] if tail else rest
    return "/".join("[^/]+" if segment == "*" else _literal(segment) for segment in body) + tail


def portable_path(path: str) -> tuple[str, str] | None:
    """``(pathType, path)`` for controllers without regex paths; None when ``*`` makes it inexpressible."""
    parts = segments(path)
    if "*" in parts:
        return None
    if parts[-1] == "**":
        return "Prefix", literal_prefix(path) or "/"
    return "Exact", path


def _path(spec: IngressSpec, path_type: str, path: str) -> dict[str, Any]:
    backend = {"service": {"name": spec.name, "port": {"number": SERVICE_PORT}}}
    return {"path": path, "pathType": path_type, "backend": backend}


def _paths(spec: IngressSpec, dialect: IngressDialect) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The rule's paths, and the annotations that say how they are to be read."""
    routes = sorted(spec.routes, key=lambda route: route.name)
    if dialect == "ingress-nginx":
        paths = [_path(spec, "ImplementationSpecific", nginx_path(r.path, r.strip_prefix)) for r in routes]
        return paths, {f"{NGINX}/use-regex": "true", f"{NGINX}/rewrite-target": "/$2"}
    paths, not_served, kept = [], [], []
    for route in routes:
        found = portable_path(route.path)
        if found is None:
            not_served.append(route.name)
            continue
        if route.strip_prefix and literal_prefix(route.path):
            kept.append(route.name)
        paths.append(_path(spec, *found))
    limits = {NOT_SERVED: ",".join(not_served), PREFIX_KEPT: ",".join(kept)}
    return paths, {key: value for key, value in limits.items() if value}


def render_ingress(spec: IngressSpec) -> dict[str, Any] | None:
    """The service's Ingress (see the module doc); None when no route leads to it."""
    paths, annotations = _paths(spec, ingress_dialect(spec.ingress_class))
    if not paths:
        return None
    rule: dict[str, Any] = {"http": {"paths": paths}}
    if spec.host:
        rule = {"host": spec.host, **rule}
    body: dict[str, Any] = {"rules": [rule]}
    if spec.ingress_class:
        body = {"ingressClassName": spec.ingress_class, **body}
    described = {
        "gantry/project": spec.project,
        "gantry/service": spec.service,
        "gantry/environment": spec.environment,
        "gantry/routes": ",".join(sorted(r.name for r in spec.routes)),
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {"app": spec.name, **MANAGED_BY},
            "annotations": described | annotations,
        },
        "spec": body,
    }
