"""The guide's rules for environments and releases, and the deployment files, as pure functions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Literal, Protocol, TypeVar, get_args

from pydantic import ConfigDict
from pydantic.config import JsonDict

from shared import yaml_text
from shared.errors import Conflict, InvalidInput
from shared.events import VersionReleased
from shared.naming import DNS1123_LABEL, DNS1123_MAX, dns1123_name, label_value, workload_name
from shared.schemas import not_blank, spaces

ENVIRONMENT_CODE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
Tier = Literal["dev", "test", "staging", "prod"]
TIERS: tuple[Tier, ...] = get_args(Tier)
AUTO_RELEASE_BY = "auto-release"
Trigger = Literal["manual", "auto"]
VersionRefT = TypeVar("VersionRefT", bound="VersionRef")


# the same rules as the OpenAPI document states them (the validators keep their messages)
NAME_PATTERN = not_blank  # a name is not blank
NAMESPACE_PATTERN = r"^$|" + DNS1123_LABEL.pattern  # empty: derived from the code
REF_PATTERN_ITEM = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": f"^(?!refs/)[^{spaces()}]+$"}


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
    return yaml_text.dump_blocks([document], sort_keys=False, explicit_start=False)


def refuse_second_release(project: str, service: str, environment: str, *, already_released: bool) -> None:
    """The guide: a service is released to an environment once; after that, versions are released to it."""
    if already_released:
        raise Conflict(
            f"service {service!r} is already released to environment {environment!r}, and an "
            "environment a service is already released to cannot be released to again: "
            f"release a version to it with POST /api/release/projects/{project}/services/"
            f"{service}/releases/{environment}/versions"
        )


# Auto-release and the version a new environment gets

# Every repository Gantry makes is created with its template committed to ``main`` (local and
# GitLab alike), so ``main`` is its default branch: the refs auto-release takes unless told others.
DEFAULT_REFS: tuple[str, ...] = ("main",)
MAX_REF_PATTERNS = 20


class VersionRef(Protocol):
    """What the ref rules need of a version."""

    version: str
    ref: str
    tag: bool


def validate_ref_patterns(refs: Sequence[str] | None) -> tuple[str, ...]:
    """Glob patterns of branch names (``main``, ``release/*``); none given means the default branch."""
    if refs is None:
        return DEFAULT_REFS
    if len(refs) > MAX_REF_PATTERNS:
        raise InvalidInput(f"refs has {len(refs)} patterns: {MAX_REF_PATTERNS} at most")
    kept: list[str] = []
    for pattern in refs:
        if not pattern or len(pattern) > 255 or any(c.isspace() for c in pattern):
            raise InvalidInput(
                f"ref pattern {pattern[:60]!r} is not valid: give a branch name or a glob of one "
                "(1-255 characters, no spaces), e.g. 'main' or 'release/*'"
            )
        if pattern.startswith("refs/"):
            raise InvalidInput(
                f"ref pattern {pattern!r} names a full ref: give the branch name as pipelines report "
                f"it, e.g. {pattern.removeprefix('refs/heads/')!r}"
            )
        if pattern not in kept:
            kept.append(pattern)
    return tuple(kept)


# validate_auto_release as JSON Schema: enabled, with tags off, needs refs (or none given: the default branch)
AUTO_RELEASE_RULE: JsonDict = {
    "if": {"properties": {"enabled": {"const": True}, "tags": {"const": False}}},
    "then": {"properties": {"refs": {"anyOf": [{"type": "null"}, {"type": "array", "minItems": 1}]}}},
}


def validate_auto_release(enabled: bool, refs: Sequence[str], tags: bool) -> None:
    """Auto-release on must be able to take some version: at least one ref pattern, or tags."""
    if enabled and not refs and not tags:
        raise InvalidInput(
            "auto-release with no refs and tags off would release nothing: give refs "
            '(e.g. ["main"]), set "tags": true, or set "enabled": false'
        )


def ref_matches(version: VersionRef, refs: Sequence[str], tags: bool) -> bool:
    """A tag's version follows the ``tags`` switch; a branch's version, the glob patterns.

    ``*`` matches any characters, ``/`` included (``release/*`` takes ``release/1.2/hotfix``),
    ``?`` one character, ``[ab]`` one of a set; case matters, as in git."""
    if version.tag:
        return tags
    return any(fnmatchcase(version.ref, pattern) for pattern in refs)


def auto_release_skip(
    version: VersionRef, *, enabled: bool, service_enabled: bool, refs: Sequence[str], tags: bool
) -> str | None:
    """Why a new version is not auto-released, or None when it goes to every environment."""
    if not enabled:
        return "auto-release is off"
    if not service_enabled:
        return "the service is disabled"
    if not ref_matches(version, refs, tags):
        if version.tag:
            return f"it comes from tag {version.ref!r} and auto-release takes no tags"
        return f"its branch {version.ref!r} matches none of {', '.join(refs) or 'no patterns'}"
    return None


def choose_initial_version(
    versions_newest_first: Sequence[VersionRefT], refs: Sequence[str], tags: bool
) -> tuple[VersionRefT | None, str]:
    """The version that goes to an environment the service is newly released to, and why.

    The newest version auto-release would take (its refs and tags switch, on or off), so a
    feature branch's build never lands in a new environment by itself."""
    taken = describe_refs(refs, tags)
    for version in versions_newest_first:
        if ref_matches(version, refs, tags):
            return version, f"version {version.version!r} goes there: the newest from {taken}"
    if not versions_newest_first:
        return None, "no version goes there yet: the service has none; its next one from " + taken + " will"
    return None, (
        f"no version goes there: none of the {len(versions_newest_first)} versions is from {taken}; "
        "release one by name with POST …/releases/{environment}/versions, or change the refs with "
        "PUT …/auto-release"
    )


def describe_refs(refs: Sequence[str], tags: bool) -> str:
    branches = f"a branch matching {', '.join(refs)}" if refs else ""
    if tags:
        return f"{branches} or a tag" if branches else "a tag"
    return branches or "nowhere"


# Lifecycle: disabled services, un-release, deleting an environment


def refuse_disabled(project: str, service: str, *, enabled: bool) -> None:
    """A disabled service keeps its versions but is not released."""
    if not enabled:
        raise Conflict(
            f"service {service!r} is disabled: enable it with PATCH /api/catalog/projects/{project}/"
            f'services/{service} {{"enabled": true}}, then release it'
        )


def runs_after(state: str) -> bool:
    """A workload runs in an environment after any deploy status but ``removed`` (an undeploy)."""
    return state != "removed"


def refuse_withdraw_while_running(project: str, service: str, environment: str, *, running: bool) -> None:
    """A service is un-released from an environment only once nothing of it runs there."""
    if running:
        raise Conflict(
            f"service {service!r} runs in environment {environment!r}: undeploy it first (a deploy "
            f"admin: DELETE /api/deploy/environments/{environment}/projects/{project}/services/{service}), "
            "then un-release it"
        )


def refuse_environment_delete(code: str, *, released: Sequence[str], running: Sequence[str]) -> None:
    """An environment is deleted only when no service is released to it and nothing runs there."""
    reasons = []
    if running:
        reasons.append(f"running there: {', '.join(running)} (undeploy them first)")
    if released:
        reasons.append(
            f"released to it: {', '.join(released)} (un-release them with DELETE "
            f"/api/release/projects/<project>/services/<service>/releases/{code})"
        )
    if reasons:
        raise Conflict(f"environment {code!r} is still in use; " + "; ".join(reasons))


INGRESS_HOST = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
INGRESS_CLASS = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


INGRESS_CLASS_PATTERN = r"^$|" + INGRESS_CLASS.pattern  # empty: cleared
INGRESS_HOST_PATTERN = r"^$|" + INGRESS_HOST.pattern


def validate_ingress_class(value: str | None) -> str | None:
    """The IngressClass the gateway's routes use there (a DNS-1123 subdomain); empty clears it."""
    if not value:
        return None
    if not INGRESS_CLASS.match(value):
        raise InvalidInput(
            f"ingress_class {value[:60]!r} is not an IngressClass name: use lower-case letters, digits, "
            "'-' and '.', at most 253 characters (e.g. nginx)"
        )
    return value


def validate_ingress_host(value: str | None) -> str | None:
    """The host the environment's routes answer on (``*.`` wildcard allowed); empty clears it."""
    if not value:
        return None
    if len(value) > 253 or not INGRESS_HOST.match(value):
        raise InvalidInput(
            f"ingress_host {value[:60]!r} is not a host name: use lower-case DNS labels separated by "
            "dots, optionally starting with '*.' (e.g. staging.shop.example.com), without scheme or port"
        )
    return value
