"""A service's gateway routes rendered as its Ingress: the ingress-nginx regex paths say exactly what
the gateway says (which request matches, what path the service receives), the portable paths say
what they can and name the routes they cannot serve as the gateway would."""

from __future__ import annotations

import re

import pytest
import yaml

from services.deploy import domain
from services.deploy.cluster import WorkloadSpec
from services.deploy.ingress import (
    NGINX,
    NOT_SERVED,
    PREFIX_KEPT,
    IngressSpec,
    RouteRule,
    nginx_path,
    portable_path,
    render_ingress,
)
from services.deploy.manifests import render_objects, render_yaml
from services.gateway import domain as gateway

PATTERNS = ["/orders/**", "/orders", "/shop/orders/export", "/shop/*/items", "/shop/*", "/**", "/*", "/a.b/*/c/**"]
REQUESTS = [
    "/",
    "/orders",
    "/orders/",
    "/orders/7",
    "/orders/7/items",
    "/ordersx",
    "/ordersx/7",
    "/shop/orders/export",
    "/shop/orders/export/1",
    "/shop/7/items",
    "/shop/7/items/8",
    "/shop//items",
    "/shop/7",
    "/shop",
    "/a.b/1/c",
    "/a.b/1/c/d/e",
    "/aXb/1/c",
]


@pytest.mark.parametrize("strip_prefix", [True, False])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_nginx_paths_match_and_forward_as_the_gateway_does(pattern: str, strip_prefix: bool) -> None:
    """ingress-nginx anchors a regex path at the start (``^``) and rewrites to ``/$2``."""
    regex = nginx_path(pattern, strip_prefix)
    assert regex.startswith("/"), "the API server takes only absolute paths"
    for path in REQUESTS:
        found = re.match(regex, path)
        assert (found is not None) == gateway.matches(pattern, path), (pattern, path, regex)
        if found is not None:
            assert "/" + found.group(2) == gateway.forward_path(pattern, path, strip_prefix), (pattern, path, regex)


def test_nginx_paths_read_as_expected() -> None:
    assert nginx_path("/orders/**", True) == "/(orders)(?:/|$)(.*)"
    assert nginx_path("/orders/**", False) == "/()(orders(?:/.*)?)$"
    assert nginx_path("/shop/*/items", True) == "/(shop)/([^/]+/items)$"
    assert nginx_path("/v1.2/export", True) == r"/(v1\.2/export)()$"
    assert nginx_path("/**", True) == "/()(.*)"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/orders/**", ("Prefix", "/orders")),
        ("/shop/orders/**", ("Prefix", "/shop/orders")),
        ("/**", ("Prefix", "/")),
        ("/orders", ("Exact", "/orders")),
        ("/shop/*/items", None),
        ("/shop/*", None),
        ("/*/orders/**", None),
    ],
)
def test_portable_paths(pattern: str, expected: tuple[str, str] | None) -> None:
    assert portable_path(pattern) == expected


ROUTES = (
    RouteRule("orders", "/orders/**"),
    RouteRule("export", "/orders-export", strip_prefix=False),
    RouteRule("items", "/shop/*/items"),
)


def spec(
    ingress_class: str | None = "nginx", host: str | None = "staging.example.org", **fields: object
) -> IngressSpec:
    values: dict[str, object] = {
        "project": "shop",
        "service": "web service",
        "environment": "staging",
        "namespace": "shop-staging",
        "ingress_class": ingress_class,
        "host": host,
        "routes": ROUTES,
    }
    return IngressSpec(**(values | fields))  # type: ignore[arg-type]


def test_one_ingress_per_service_to_its_service_port() -> None:
    ingress = render_ingress(spec())
    assert ingress is not None
    [service] = [o for o in render_objects(workload()) if o["kind"] == "Service"]
    assert (ingress["apiVersion"], ingress["kind"]) == ("networking.k8s.io/v1", "Ingress")
    assert ingress["metadata"]["name"] == service["metadata"]["name"] == "shop-web-service"
    assert ingress["metadata"]["namespace"] == service["metadata"]["namespace"] == "shop-staging"
    assert ingress["metadata"]["labels"] == {"app": "shop-web-service", "app.kubernetes.io/managed-by": "gantry"}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "staging.example.org"
    backends = {
        p["backend"]["service"]["name"] + ":" + str(p["backend"]["service"]["port"]["number"])
        for p in rule["http"]["paths"]
    }
    assert backends == {f"{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"}
    assert ingress["metadata"]["annotations"]["gantry/routes"] == "export,items,orders"


def workload() -> WorkloadSpec:
    return WorkloadSpec(
        project="shop",
        service="web service",
        environment="staging",
        namespace="shop-staging",
        version="1.0.0",
        image="registry.test/shop/web:1.0.0",
        replicas=1,
    )


def test_ingress_nginx_serves_every_route_with_its_rewrite() -> None:
    ingress = render_ingress(spec("nginx-internal"))
    assert ingress is not None
    annotations = ingress["metadata"]["annotations"]
    assert (annotations[f"{NGINX}/use-regex"], annotations[f"{NGINX}/rewrite-target"]) == ("true", "/$2")
    assert NOT_SERVED not in annotations and PREFIX_KEPT not in annotations
    paths = [(p["pathType"], p["path"]) for p in ingress["spec"]["rules"][0]["http"]["paths"]]
    assert paths == [  # by route name
        ("ImplementationSpecific", "/()(orders-export)$"),
        ("ImplementationSpecific", "/(shop)/([^/]+/items)$"),
        ("ImplementationSpecific", "/(orders)(?:/|$)(.*)"),
    ]


def test_other_controllers_get_portable_paths_and_are_told_what_cannot_be_served() -> None:
    ingress = render_ingress(spec("traefik"))
    assert ingress is not None
    annotations = ingress["metadata"]["annotations"]
    assert not any(key.startswith(NGINX) for key in annotations)
    assert annotations[NOT_SERVED] == "items"  # '*' has no portable path type
    assert annotations[PREFIX_KEPT] == "orders"  # served, but /orders/7 reaches the service as /orders/7
    paths = [(p["pathType"], p["path"]) for p in ingress["spec"]["rules"][0]["http"]["paths"]]
    assert paths == [("Exact", "/orders-export"), ("Prefix", "/orders")]


def test_without_class_or_host_the_cluster_defaults_apply() -> None:
    ingress = render_ingress(spec(None, None, routes=(RouteRule("all", "/**"),)))
    assert ingress is not None
    assert "ingressClassName" not in ingress["spec"]
    assert ingress["spec"]["rules"] == [
        {
            "http": {
                "paths": [
                    {
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": {"service": {"name": "shop-web-service", "port": {"number": 80}}},
                    }
                ]
            }
        }
    ]
    assert PREFIX_KEPT not in ingress["metadata"]["annotations"], "stripping nothing keeps nothing"


def test_no_route_no_ingress() -> None:
    assert render_ingress(spec(routes=())) is None
    only_wildcards = (RouteRule("items", "/shop/*/items"),)
    assert render_ingress(spec("traefik", routes=only_wildcards)) is None
    assert render_ingress(spec("nginx", routes=only_wildcards)) is not None


def test_rendered_yaml_is_stable() -> None:
    first = render_yaml([render_ingress(spec())], "shop-web-service.ingress.yaml")  # type: ignore[list-item]
    shuffled = spec(routes=tuple(reversed(ROUTES)))
    assert render_yaml([render_ingress(shuffled)], "shop-web-service.ingress.yaml") == first  # type: ignore[list-item]
    assert yaml.safe_load(first.split("\n", 1)[1])["kind"] == "Ingress"


@pytest.mark.parametrize(
    ("ingress_class", "dialect"),
    [("nginx", "ingress-nginx"), ("NGINX-public", "ingress-nginx"), ("traefik", "portable"), (None, "portable")],
)
def test_the_ingress_class_chooses_how_paths_are_written(ingress_class: str | None, dialect: str) -> None:
    assert domain.ingress_dialect(ingress_class) == dialect


def test_a_route_target_names_a_service_by_id_or_project_and_code() -> None:
    assert domain.serves_target("abc", "abc", "shop", "orders")
    assert domain.serves_target("shop/orders", "abc", "shop", "orders")
    assert not domain.serves_target("shop/cart", "abc", "shop", "orders")
    assert not domain.serves_target("deploy", "abc", "shop", "orders")
