"""The guide's rules for environments and releases, and the deployment files, as pure functions."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal, get_args

import yaml
from pydantic import ConfigDict

from shared.errors import Conflict, InvalidInput
from shared.events import VersionReleased
from shared.naming import DNS1123_LABEL, DNS1123_MAX, dns1123_name, label_value, workload_name

ENVIRONMENT_CODE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
Tier = Literal["dev", "test", "staging", "prod"]
TIERS: tuple[Tier, ...] = get_args(Tier)
AUTO_RELEASE_BY = "auto-release"
Trigger = Literal["manual", "auto"]


def validate_environment_code(code: str) -> str:
    if not ENVIRONMENT_CODE.match(code):
        raise InvalidInput(
            f"environment code {code!r} is not valid: use 1-40 lower-case letters, digits and "
            "'-', starting and ending with a letter or digit (example: staging-eu)"
        )
    return code


def validate_tier(tier: str) -> Tier:
    for known in TIERS:
        if tier == known:
            return known
    raise InvalidInput(f"environment tier {tier!r} is not valid: choose one of {', '.join(TIERS)}")


def validate_name(name: str) -> str:
    if not name or not name.strip():
        raise InvalidInput("environment name is required")
    if len(name) > 128:
        raise InvalidInput("environment name is too long: 128 characters at most")
    return name.strip()


def namespace_for(code: str, namespace: str | None) -> str:
    """The Kubernetes namespace: the one given (a DNS-1123 label), else derived from the code."""
    if namespace is None or namespace == "":
        return dns1123_name(code)
    if len(namespace) > DNS1123_MAX or not DNS1123_LABEL.match(namespace):
        raise InvalidInput(
            f"namespace {namespace!r} is not a Kubernetes namespace name: use at most 63 lower-case "
            "letters, digits and '-', starting and ending with a letter or digit, or leave it out "
            f"to use {dns1123_name(code)!r}"
        )
    return namespace


class ReleaseFacts(VersionReleased):
    """Everything the deployment files say about one release: the release and its version's commit."""

    model_config = ConfigDict(frozen=True)

    sha: str
    ref: str
    pipeline_id: int
    released_at: datetime
    release_event_id: str


def render_deployment_files(facts: ReleaseFacts) -> str:
    """The deployment files sent to the environment, with the version attached for tracking."""
    name = workload_name(facts.project, facts.service)
    document = {
        "apiVersion": "gantry.dev/v1",
        "kind": "Release",
        "metadata": {
            "name": name,
            "namespace": facts.namespace,
            "labels": {
                "app.kubernetes.io/name": name,
                "app.kubernetes.io/part-of": dns1123_name(facts.project),
                "app.kubernetes.io/version": label_value(facts.version),
                "app.kubernetes.io/managed-by": "gantry",
            },
            "annotations": {
                "gantry.dev/service-id": facts.service_id,
                "gantry.dev/release-event-id": facts.release_event_id,
            },
        },
        "spec": {
            "project": facts.project,
            "service": facts.service,
            "environment": facts.environment,
            "namespace": facts.namespace,
            "image": facts.image,
            "version": {
                "name": facts.version,
                "sha": facts.sha,
                "ref": facts.ref,
                "pipeline_id": facts.pipeline_id,
            },
            "release": {
                "trigger": facts.trigger,
                "by": facts.by,
                "released_at": facts.released_at.isoformat(),
            },
        },
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def refuse_second_release(project: str, service: str, environment: str, *, already_released: bool) -> None:
    """The guide: a service is released to an environment once; after that, versions are released to it."""
    if already_released:
        raise Conflict(
            f"service {service!r} is already released to environment {environment!r}, and an "
            "environment a service is already released to cannot be released to again: "
            f"release a version to it with POST /api/release/projects/{project}/services/"
            f"{service}/releases/{environment}/versions"
        )
