"""``gantry get KIND``: what each kind reads through the gateway, and its table's columns."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from gantry.client.api import Api
from gantry.client.errors import USAGE, CliError
from gantry.client.output import Column

Item = dict[str, Any]


def _track(row: Item, track: str, field: str) -> Any:
    found = row.get(track)
    return found.get(field) if isinstance(found, dict) else None


SERVICE_COLUMNS: Sequence[Column] = (
    ("project", "project"),
    ("service", "service"),
    ("environment", "environment"),
    ("stable", "stable.version"),
    ("canary", "canary.version"),
    ("replicas", "stable.replicas"),
    ("available", "stable.available"),
    ("state", lambda row: _track(row, "stable", "state") or row.get("state")),
    ("auto-deploy", "auto_deploy"),
    ("last-deployed", "last_deployment.created_at"),
    ("by", "last_deployment.by"),
)
COLUMNS: dict[str, Sequence[Column]] = {
    "services": SERVICE_COLUMNS,
    "versions": (
        ("name", "name"),
        ("ref", "ref"),
        ("sha", lambda row: str(row.get("sha", ""))[:8]),
        ("pipeline", "pipeline_id"),
        ("created", "created_at"),
    ),
    "deployments": (
        ("id", "id"),
        ("environment", "environment"),
        ("version", "version"),
        ("action", "action"),
        ("track", "track"),
        ("replicas", "replicas"),
        ("state", "state"),
        ("trigger", "trigger"),
        ("by", "by"),
        ("created", "created_at"),
    ),
    "environments": (
        ("code", "code"),
        ("name", "name"),
        ("tier", "tier"),
        ("namespace", "namespace"),
        ("ingress-class", "ingress_class"),
        ("ingress-host", "ingress_host"),
    ),
    "resources": (
        ("name", "name"),
        ("environment", "environment"),
        ("type", "type"),
        ("revision", "revision"),
        ("secret", "secret_set"),
        ("updated", lambda row: row.get("updated_at") or row.get("created_at")),
        ("by", lambda row: row.get("updated_by") or row.get("created_by")),
    ),
}
KINDS = tuple(COLUMNS)


def needs(args: argparse.Namespace, kind: str, *flags: str) -> list[str]:
    missing = [f"--{flag}" for flag in flags if not getattr(args, flag)]
    if missing:
        raise CliError(USAGE, f"`gantry get {kind}` needs {' and '.join(missing)}")
    return [quote(getattr(args, flag), safe="") for flag in flags]


def service_rows(services: Sequence[Item]) -> list[Item]:
    """The organization view as a table: one row per service and environment it is released to
    (a service released nowhere: one row without an environment)."""
    rows = []
    for service in services:
        head = {key: value for key, value in service.items() if key != "environments"}
        rows += [head | environment for environment in service.get("environments") or ()] or [head]
    return rows


def get_services(api: Api, args: argparse.Namespace) -> list[Item]:
    """The deploy organization view (what runs where); with ``--project``, the project's services
    catalog knows but no environment has yet are listed too, without environments."""
    params = {"q": args.service or args.project} if (args.service or args.project) else {}
    found = [
        item
        for item in api.pages("/api/deploy/services", params)
        if (not args.project or item["project"] == args.project)
        and (not args.service or item["service"] == args.service)
    ]
    if args.environment:
        found = [
            item | {"environments": [e for e in item["environments"] if e["environment"] == args.environment]}
            for item in found
            if any(e["environment"] == args.environment for e in item["environments"])
        ]
    elif args.project:
        listed = {item["service"] for item in found}
        for service in api.pages(f"/api/catalog/projects/{quote(args.project, safe='')}/services"):
            if service["code"] not in listed and (not args.service or service["code"] == args.service):
                state = "enabled" if service.get("enabled", True) else "disabled"
                found.append(
                    {"service_id": service["id"], "project": args.project, "service": service["code"]}
                    | {"name": service["name"], "state": state, "environments": []}
                )
    return found


def get_versions(api: Api, args: argparse.Namespace) -> list[Item]:
    project, service = needs(args, "versions", "project", "service")
    return list(api.pages(f"/api/versioning/projects/{project}/services/{service}/versions"))


def get_deployments(api: Api, args: argparse.Namespace) -> list[Item]:
    """A service's deployment history, newest first: in one environment, or in every one it is in."""
    project, service = needs(args, "deployments", "project", "service")
    if args.environment:
        environments = [quote(args.environment, safe="")]
    else:
        opened = api.call("GET", f"/api/deploy/services/{project}/{service}")
        environments = [quote(e["environment"], safe="") for e in opened["environments"]]
    found: list[Item] = []
    for environment in environments:
        path = f"/api/deploy/environments/{environment}/projects/{project}/services/{service}/deployments"
        found += api.pages(path)
    return sorted(found, key=lambda item: str(item["created_at"]), reverse=True)


def get_environments(api: Api, _args: argparse.Namespace) -> list[Item]:
    return list(api.pages("/api/release/environments"))


def get_resources(api: Api, args: argparse.Namespace) -> list[Item]:
    (environment,) = needs(args, "resources", "environment")
    return list(api.pages(f"/api/deploy/environments/{environment}/resources"))


GETTERS: dict[str, Callable[[Api, argparse.Namespace], list[Item]]] = {
    "services": get_services,
    "versions": get_versions,
    "deployments": get_deployments,
    "environments": get_environments,
    "resources": get_resources,
}
