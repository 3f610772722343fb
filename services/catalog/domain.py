"""The guide's rules for projects and services, as pure functions."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol

from shared.errors import Conflict, InvalidInput
from shared.naming import dns1123_name, workload_name
from shared.schemas import char_class_of, not_blank

CANARY_SUFFIX = "-canary"  # the canary track's Kubernetes names end so
SERVICE_CODE = re.compile(r"^[a-z0-9_. -]+$")
PROJECT_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$|^[a-z0-9]$")


# the same rules as the OpenAPI document states them (the validators below keep their messages)
NAME_PATTERN = not_blank  # a name is not blank
SERVICE_CODE_PATTERN = r"^[a-z0-9_. -]*[a-z0-9][a-z0-9_. -]*$"


@lru_cache(maxsize=1)
def group_pattern() -> str:
    """``validate_service_group`` as a pattern: no Chinese, upper-case or space characters, no '.'
    at either end."""
    refused = char_class_of(lambda ch: _is_chinese(ch) or ch.isupper() or ch.isspace())
    return rf"^(?!\.)[^{refused}]+(?<!\.)$"


def validate_project_code(code: str) -> str:
    if not PROJECT_CODE.match(code):
        raise InvalidInput(
            f"project code {code!r} is not valid: use 1-40 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return code


def validate_service_code(code: str) -> str:
    """Service code: only letters, digits, '_', '.', '-' and spaces, and no upper case."""
    if not code or not code.strip():
        raise InvalidInput("service code is required")
    if len(code) > 64:
        raise InvalidInput("service code is too long: 64 characters at most")
    if any(ch.isupper() for ch in code):
        raise InvalidInput(f"service code {code!r} has upper-case letters: use lower case only")
    if not SERVICE_CODE.match(code):
        raise InvalidInput(
            f"service code {code!r} may contain only lower-case letters, digits, '_', '.', '-' and spaces"
        )
    if not any(ch.isalnum() for ch in code):
        raise InvalidInput(f"service code {code!r} needs at least one letter or digit")
    return code


def _is_chinese(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "") or "\u3000" <= ch <= "\u303f" or "\uff00" <= ch <= "\uffef"


def validate_service_group(group: str) -> str:
    """Service group: no Chinese characters, no upper case, not starting or ending with '.'."""
    if not group or not group.strip():
        raise InvalidInput("service group is required (example: com.acme.shop)")
    if any(_is_chinese(ch) for ch in group):
        raise InvalidInput(f"service group {group!r} contains Chinese characters, which are not allowed")
    if any(ch.isupper() for ch in group):
        raise InvalidInput(f"service group {group!r} has upper-case letters: use lower case only")
    if group.startswith(".") or group.endswith("."):
        raise InvalidInput(f"service group {group!r} may not start or end with '.'")
    if any(ch.isspace() for ch in group) or len(group) > 128:
        raise InvalidInput(f"service group {group!r} may not contain spaces and is 128 characters at most")
    return group


def validate_name(name: str, what: str = "service name") -> str:
    if not name or not name.strip():
        raise InvalidInput(f"{what} is required")
    if len(name) > 128:
        raise InvalidInput(f"{what} is too long: 128 characters at most")
    return name.strip()


class NamedService(Protocol):
    """What the clash rule needs to know of a service already there."""

    project: str
    code: str
    slug: str


def clash(project: str, code: str, existing: NamedService | None) -> str | None:
    """Why ``code`` cannot be used in ``project``, or None. The guide: the service code is unique in
    its project; Gantry adds that the names derived from it must be free too: the name in the
    project, the Kubernetes name across projects, and never a canary's name."""
    slug, workload = dns1123_name(code), workload_name(project, code)
    if workload.endswith(CANARY_SUFFIX):
        return f"service code {code!r} ends in '-canary', which Gantry keeps for canary deployments"
    if existing is None:
        return None
    if existing.project == project and existing.code == code:
        return f"service code {code!r} is already used in project {project!r}"
    if existing.project == project and existing.slug == slug:
        return (
            f"service code {code!r} derives the name {slug!r}, which service {existing.code!r} "
            "already uses: choose another code"
        )
    return (
        f"service code {code!r} derives the Kubernetes name {workload!r}, which clashes with service "
        f"{existing.code!r} of project {existing.project!r}: choose another code"
    )


ChangeKind = Literal["updated", "disabled", "enabled"]


@dataclass(frozen=True)
class ServiceChange:
    """One change a service goes through, and its state once it is made."""

    change: ChangeKind
    name: str
    enabled: bool


def service_changes(name: str, enabled: bool, *, new_name: str | None, new_enabled: bool | None) -> list[ServiceChange]:
    """What a change of name and/or switch does, in order (the rename first): nothing for what is
    already so, so disabling a disabled service changes nothing and announces nothing."""
    if new_name is None and new_enabled is None:
        raise InvalidInput('nothing to change: give "name", "enabled" or both')
    changes: list[ServiceChange] = []
    if new_name is not None and (new_name := validate_name(new_name)) != name:
        name = new_name
        changes.append(ServiceChange("updated", name, enabled))
    if new_enabled is not None and new_enabled != enabled:
        enabled = new_enabled
        changes.append(ServiceChange("enabled" if enabled else "disabled", name, enabled))
    return changes


def require_disabled(project: str, code: str, enabled: bool) -> None:
    """A service is deleted only once disabled: nothing releases or deploys it any more."""
    if enabled:
        raise Conflict(
            f"service {code!r} of project {project!r} is enabled: disable it first "
            f'(PATCH /api/catalog/projects/{project}/services/{code} with {{"enabled": false}}), then delete it'
        )


def require_running_nowhere(project: str, code: str, environments: Sequence[str]) -> None:
    """A service is deleted only when it runs in no environment (after an undeploy in each)."""
    if environments:
        where = ", ".join(sorted(environments))
        raise Conflict(
            f"service {code!r} of project {project!r} still runs in {where}: undeploy it there first, then delete it"
        )


def require_empty_project(project: str, services: int) -> None:
    """A project is deleted only when it has no services left."""
    if services:
        noun = "service" if services == 1 else "services"
        raise Conflict(
            f"project {project!r} still has {services} {noun}: they must be deleted first "
            f"(disable each, undeploy it everywhere, then DELETE /api/catalog/projects/{project}/services/<code>)"
        )
