"""The gateway's rules for routes, as pure functions: names, Ant-style paths, targets, matching."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from shared.ant_path import literal_prefix
from shared.errors import InvalidInput, NotFound
from shared.settings import SERVICES

ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
SERVICE_ID = re.compile(r"^[0-9a-f]{32}$")
PROJECT_SERVICE = re.compile(r"^(?P<project>[a-z0-9][a-z0-9-]{0,39})/(?P<service>[a-z0-9_.-][a-z0-9_. -]{0,63})$")
MAX_PATH = 255
# the same rules as the OpenAPI document states them (the validators keep their messages)
PATH_PATTERN = r"^(/([A-Za-z0-9._-]+|\*))*/([A-Za-z0-9._-]+|\*|\*\*)$"
TARGET_PATTERN = "|".join(
    (
        "^(" + "|".join(SERVICES) + ")$",
        SERVICE_ID.pattern,
        re.sub(r"\(\?P<\w+>", "(", PROJECT_SERVICE.pattern),  # named groups are Python's own syntax
    )
)


@dataclass(frozen=True)
class BuiltinRoute:
    name: str
    path: str
    service: str
    strip_prefix: bool


# The platform's own entry points, seeded at start and read-only.
BUILTIN_ROUTES: tuple[BuiltinRoute, ...] = (
    *(BuiltinRoute(f"{name}-api", f"/api/{name}/**", name, True) for name in SERVICES[1:]),
    BuiltinRoute("gateway-api", "/api/gateway/**", "gateway", True),
    BuiltinRoute("gitlab-webhook", "/webhooks/gitlab", "versioning", False),
)


class RouteLike(Protocol):
    name: str
    path: str


R = TypeVar("R", bound=RouteLike)


def validate_route_name(name: str) -> str:
    if not ROUTE_NAME.match(name or ""):
        raise InvalidInput(
            f"route name {name!r} is not valid: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_path(path: str) -> str:
    """An Ant-style path: '/' then segments of [A-Za-z0-9._-], '*' (one segment) or '**' (the rest)."""
    if not path or not path.startswith("/"):
        raise InvalidInput(f"route path {path!r} must start with '/' (example: /orders/**)")
    if len(path) > MAX_PATH:
        raise InvalidInput(f"route path is too long: {MAX_PATH} characters at most")
    segments = path[1:].split("/")
    for index, segment in enumerate(segments):
        if segment == "**" and index != len(segments) - 1:
            raise InvalidInput(f"route path {path!r}: '**' may only be the last segment")
        if segment not in ("*", "**") and not PATH_SEGMENT.match(segment):
            raise InvalidInput(
                f"route path {path!r}: segment {segment!r} may contain only letters, digits, "
                "'.', '_' and '-', or be '*' (one segment) or '**' (any rest, last only)"
            )
    return path


def validate_target(service: str) -> str:
    """A Gantry-managed service: its id, 'project/service', or one of the platform's services."""
    if service in SERVICES or SERVICE_ID.match(service) or PROJECT_SERVICE.match(service):
        return service
    raise InvalidInput(
        f"route target {service!r} is not valid: use 'project/service' (example: shop/orders), "
        "a service id, or one of " + ", ".join(SERVICES)
    )


def is_platform_service(service: str) -> bool:
    """One of Gantry's own services (the built-in routes' targets), known to every gateway."""
    return service in SERVICES


def require_known_target(service: str, known: bool) -> str:
    """A route leads to a service that exists: a platform service, or one catalog announced."""
    if known or is_platform_service(service):
        return service
    project = project_of(service)
    if project is not None:
        raise NotFound(
            f"route target {service!r} is not a service Gantry knows: check the project and service "
            f"code, or create the service first (POST /api/catalog/projects/{project}/services)"
        )
    raise NotFound(
        f"route target {service!r} is not the id of a service Gantry knows: check the id "
        "(catalog lists each service with it), or name the service as 'project/service'"
    )


def project_of(service: str) -> str | None:
    """The project named by a 'project/service' target, else None."""
    found = PROJECT_SERVICE.match(service)
    return found.group("project") if found else None


def builtin_owning(path: str) -> BuiltinRoute | None:
    """The built-in route whose space ``path`` would reach into, if any."""
    for route in BUILTIN_ROUTES:
        prefix = literal_prefix(route.path) if route.path.endswith("/**") else route.path
        if path == prefix or path.startswith(prefix + "/"):
            return route
    return None


def matches(pattern: str, path: str) -> bool:
    """Whether the request ``path`` matches the Ant-style ``pattern``."""
    wanted = pattern[1:].split("/")
    given = path[1:].split("/") if path.startswith("/") else path.split("/")
    if wanted[-1] == "**":
        head = wanted[:-1]
        return len(given) >= len(head) and _segments_match(head, given[: len(head)])
    return len(given) == len(wanted) and _segments_match(wanted, given)


def _segments_match(wanted: Sequence[str], given: Sequence[str]) -> bool:
    return all((w == "*" and g != "") or w == g for w, g in zip(wanted, given, strict=True))


def specificity(path: str) -> tuple[int, int, int, int]:
    """Sort key, most specific first: exact paths, more literal segments, fewer wildcards."""
    segments = path[1:].split("/")
    literal = sum(1 for s in segments if s not in ("*", "**"))
    singles = segments.count("*")
    return (int(segments[-1] == "**"), -literal, singles, -len(path))


def match_order(routes: Iterable[R]) -> list[R]:
    return sorted(routes, key=lambda r: (specificity(r.path), r.name))


def resolve(routes: Iterable[R], path: str) -> R | None:
    """The first route, in match order, whose pattern matches ``path``."""
    return next((r for r in match_order(routes) if matches(r.path, path)), None)


def forward_path(pattern: str, path: str, strip_prefix: bool) -> str:
    """The path sent on to the target: without the route's literal prefix when stripping."""
    if not strip_prefix:
        return path
    prefix = literal_prefix(pattern)
    rest = path[len(prefix) :] if prefix and path.startswith(prefix) else path
    return rest if rest.startswith("/") else "/" + rest


# The state board: which events a viewer may see, and dead letters' reasons as people read them.

DLQ_SUFFIX = ".dlq"
_PYDANTIC_ERROR = re.compile(r"^(?P<loc>\S[^\n]*)\n  (?P<msg>[^\n\[]+?)(?: \[type=[^\n]*)?$", re.MULTILINE)
_UNUSABLE_DATA = re.compile(r"has unusable data for (?P<model>\w+): (?P<problems>.*)$", re.DOTALL)


def project_of_event(event: object) -> str | None:
    """The Gantry project an event (or a dead letter's event) is about, when it names one."""
    if not isinstance(event, dict):
        return None
    data = event.get("data")
    if isinstance(data, dict):
        target = data.get("target")
        named = data.get("project") or (target.get("project") if isinstance(target, dict) else None)
        if isinstance(named, str):
            return named
    return None


def may_see_chain(reads_every_project: bool, readable: Iterable[str | None], may_read: Callable[[str], bool]) -> bool:
    """A chain is visible to organization roles, and to a project role when one of its events is
    about a project of theirs (its other hops are then theirs too: one correlation, one cause)."""
    return reads_every_project or any(project is not None and may_read(project) for project in readable)


def _short(message: str) -> str:
    message = message.strip().removeprefix("Value error, ")
    if message == "Field required":
        return "required"
    if message.startswith("Input should be "):
        return "should be " + message.removeprefix("Input should be ")
    return message[:1].lower() + message[1:]


def _field_errors(pairs: Iterable[tuple[str, str]]) -> list[str]:
    return [f"field `{loc.strip()}`: {_short(msg)}" for loc, msg in pairs]


def readable_reasons(reason: str) -> tuple[str, list[str]]:
    """Why an event was dead-lettered, as a headline and one short message per error, from the
    reason the consumer recorded (which may be a validation error's full text)."""
    kind, _, detail = reason.partition(": ")
    unusable = _UNUSABLE_DATA.search(detail)
    if kind == "poison" and unusable:
        pairs = [problem.partition(": ")[::2] for problem in unusable.group("problems").split("; ")]
        return f"data does not fit {unusable.group('model')}", _field_errors(pairs)
    found = [(m.group("loc"), m.group("msg")) for m in _PYDANTIC_ERROR.finditer(detail)]
    if kind == "undecodable" and found:
        return "not a Gantry event", _field_errors(found)
    if kind == "undecodable":
        return "not a Gantry event", [f"not JSON: {detail.splitlines()[0] if detail else 'empty value'}"]
    if kind == "failed after retries":
        return "failed after retries", [detail.splitlines()[0][:300] if detail else "no reason given"]
    first = reason.splitlines()[0] if reason else "no reason given"
    return first[:200], []


def original_topic(dead_letter_topic: str) -> str:
    """The topic a dead letter's event came from (``deploy.status.dlq`` → ``deploy.status``)."""
    if not dead_letter_topic.endswith(DLQ_SUFFIX):
        raise InvalidInput(f"{dead_letter_topic!r} is not a dead-letter topic: they end in {DLQ_SUFFIX}")
    return dead_letter_topic.removesuffix(DLQ_SUFFIX)
