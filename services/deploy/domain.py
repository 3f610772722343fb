"""The guide's deploy rules, as pure functions (no database, no cluster)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from services.deploy.manifests import split_resource_env
from shared.errors import Conflict, InvalidInput, NotFound

MIN_REPLICAS, MAX_REPLICAS = 1, 100
RESOURCE_NAME = re.compile(r"^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$")
RESOURCE_TYPE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
DATABASE = "database"
# Deployments whose version really reached the cluster (the embedded driver only renders).
APPLIED_STATES = ("rendered", "succeeded")
IN_FLIGHT_STATES = ("requested", "progressing")
FINAL_STATES = ("rendered", "succeeded", "failed", "removed")
# A deployment request may name this instead of a version: the one most recently released there.
LATEST = "latest"


def subject(project: str, service: str) -> str:
    return f"{project}/{service}"


def validate_replicas(replicas: int) -> int:
    """Desired count = pod count: at least 1 (the guide: it cannot be 0)."""
    if replicas < MIN_REPLICAS:
        raise InvalidInput(
            f"the desired count cannot be 0 (got {replicas}): set replicas to 1 or more "
            "(2 keeps the service up when one pod dies)"
        )
    if replicas > MAX_REPLICAS:
        raise InvalidInput(f"replicas {replicas} is more than the limit of {MAX_REPLICAS}")
    return replicas


def validate_resource(name: str, type_: str, data: Mapping[str, Any]) -> None:
    if not RESOURCE_NAME.match(name):
        raise InvalidInput(
            f"resource name {name!r} is not valid: use 1-63 lower-case letters, digits, '_', '.', "
            "'-', starting and ending with a letter or digit (example: orders-db)"
        )
    if not RESOURCE_TYPE.match(type_):
        raise InvalidInput(
            f"resource type {type_!r} is not valid: use a lower-case word such as database, cache, queue or config"
        )
    check_environment_variables({name: {"type": type_, "data": dict(data)}})


def check_environment_variables(snapshot: Mapping[str, Mapping[str, Any]]) -> None:
    """The resources' data becomes environment variables: refuse two keys mapping to one."""
    try:
        split_resource_env({name: dict(body) for name, body in snapshot.items()})
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


def choose_resources(requested: Sequence[str] | None, last: Sequence[str] | None, what: str) -> list[str]:
    """The first deployment must name its resources; later ones default to the last choice."""
    if requested is None:
        if last is None:
            raise InvalidInput(
                f"the first deployment of {what} must select its resources: send "
                '"resources": [names] (an empty list when it needs none)'
            )
        return list(last)
    if len(set(requested)) != len(requested):
        raise InvalidInput(f"resources {list(requested)} name one resource twice")
    return list(requested)


def database_names(snapshot: Mapping[str, Mapping[str, Any]]) -> set[str]:
    return {name for name, body in snapshot.items() if body.get("type") == DATABASE}


def guard_database_change(
    last: Mapping[str, Mapping[str, Any]] | None,
    chosen: Mapping[str, Mapping[str, Any]],
    confirmed: bool,
) -> None:
    """Dropping or swapping the database of the last deployment needs an explicit confirmation."""
    if last is None or confirmed:
        return
    dropped = database_names(last) - database_names(chosen)
    changed = {
        name for name in database_names(last) & database_names(chosen) if _values(last[name]) != _values(chosen[name])
    }
    if dropped or changed:
        names = ", ".join(sorted(dropped | changed))
        raise Conflict(
            "changing the database resource can lose data: resend with "
            f"confirm_resource_change=true (the last deployment used {names})"
        )


def _values(body: Mapping[str, Any]) -> tuple[Any, Any]:
    """A snapshot's values: data, and the sealed secret values (an unchanged value keeps its sealed form)."""
    return body.get("data"), body.get("sealed")


def track_of(action: str, strategy: str) -> Literal["stable", "canary"]:
    """The track a request changes: a canary deploy or abort the canary, anything else stable."""
    if action == "abort" or (action == "deploy" and strategy == "canary"):
        return "canary"
    return "stable"


def rollback_target(history: Iterable[tuple[str, str]], current: str) -> str | None:
    """Newest applied version but ``current`` (``history``: (version, state), newest first)."""
    for version, state in history:
        if state in APPLIED_STATES and version != current:
            return version
    return None


def require_stable_for_canary(what: str, *, track: str, stable_runs: bool) -> None:
    """The guide: a canary is a second track beside the stable one, so it needs a stable deployment."""
    if track == "canary" and not stable_runs:
        raise Conflict(
            f"a canary runs beside the stable deployment, and {what} has none yet: "
            'deploy with "strategy": "rolling" first'
        )


@dataclass(frozen=True)
class AutoDeployFacts:
    """What the auto-deploy rule of one (service, environment) looks at when a version is released."""

    rule_enabled: bool
    manually_deployed: bool  # a first deployment was made by hand (which also chose the resources)
    last_stable_replicas: int | None
    running_version: str | None  # what the stable track runs, and how its last rollout ended
    running_state: str | None
    released_version: str
    service_enabled: bool = True  # catalog can disable a service: then nothing deploys it


def auto_deploy_replicas(facts: AutoDeployFacts) -> int | None:
    """The guide: an auto-deploy rule applies only after a first manual deployment; it deploys each
    newly released version with the stable track's replicas. None: nothing to deploy."""
    if not facts.service_enabled:
        return None
    if not facts.rule_enabled or not facts.manually_deployed or facts.last_stable_replicas is None:
        return None
    if facts.running_version == facts.released_version and facts.running_state != "failed":
        return None  # already running: a re-release is not a new deployment
    return facts.last_stable_replicas


def require_enabled(project: str, service: str, state: str) -> None:
    """The guide: a disabled service keeps its versions but is not deployed until enabled again."""
    if state == "enabled":
        return
    what = subject(project, service)
    if state == "deleted":
        raise Conflict(f"{what} was deleted: it can no longer be deployed")
    raise Conflict(
        f"{what} is {state}, and a {state} service is not deployed: enable it first "
        f'(PATCH /api/catalog/projects/{project}/services/{service} with {{"enabled": true}})'
    )


def require_known_environment(environment: str, *, announced: bool, released_there: bool) -> None:
    """A deployment names an existing environment: one release announced, or one that versions
    were released to before environments were announced."""
    if not announced and not released_there:
        raise NotFound(
            f"environment {environment!r} does not exist: see GET /api/release/environments "
            "for the environments there are (an org admin creates one with POST /api/release/environments)"
        )


def resolve_version(requested: str, newest_released: str | None, what: str, environment: str) -> str:
    """``"latest"`` means the version most recently released to the environment."""
    if requested != LATEST:
        return requested
    if newest_released is None:
        raise Conflict(f"no version of {what} is released to {environment}: release one there first, then deploy it")
    return newest_released


def check_resent(key: str, first_fingerprint: str | None, fingerprint: str | None) -> None:
    """An Idempotency-Key names one request: resent, it must be the same request."""
    if first_fingerprint and fingerprint and first_fingerprint != fingerprint:
        raise InvalidInput(
            f"the Idempotency-Key {key!r} was first sent with a different request: resend exactly the "
            "first request to get its deployment, or use a new key for a new request"
        )


def counts_known(state: str) -> bool:
    """Rendered manifests run nowhere: their pod counts are unknown (null), not 0 (an outage)."""
    return state != "rendered"


# --- gateway routes as Ingress rules ------------------------------------------------------------

IngressDialect = Literal["ingress-nginx", "portable"]


def serves_target(target: str, service_id: str, project: str, service: str) -> bool:
    """Whether a gateway route's target (a service id or 'project/service') names this service;
    a platform service's routes name none of the services deploy runs."""
    return target in (service_id, subject(project, service))


def ingress_dialect(ingress_class: str | None) -> IngressDialect:
    """How routes become Ingress paths: ingress-nginx (any class whose name says nginx) takes regex
    paths and a rewrite, so every route is served as the gateway serves it; other controllers get
    the portable path types, which cannot express '*' segments or strip a prefix."""
    return "ingress-nginx" if ingress_class and "nginx" in ingress_class.lower() else "portable"


# --- resources' revisions, and what may be deleted or removed ------------------------------------

REMOVED = ("undeploy", "removed")  # (action, state) of a deployment that took the workload out


def next_revision(last: int | None) -> int:
    """Revisions are numbered 1, 2, … per resource name and never reused (``last``: the highest
    so far, also of a deleted resource of that name)."""
    return 1 if last is None else last + 1


def resource_revisions(snapshot: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """The revision of each resource a deployment used, as its snapshot recorded it (deployments
    made before resources had revisions recorded none)."""
    return {name: int(body["revision"]) for name, body in snapshot.items() if "revision" in body}


def refuse_deleting_a_used_resource(name: str, environment: str, used_by: Sequence[str]) -> None:
    """A resource that a running deployment uses cannot be deleted: the workload reads it."""
    if used_by:
        raise Conflict(
            f"resource {name!r} is used by what runs in {environment}: {', '.join(sorted(used_by))}; "
            "deploy them without it, or undeploy them, then delete it"
        )


def workload_removed(latest: tuple[str, str] | None) -> bool:
    """Whether the last deployment (``(action, state)``) took the workload out of the cluster."""
    return latest == REMOVED


def require_workload_to_remove(what: str, environment: str, latest: tuple[str, str] | None) -> None:
    """Undeploy removes a workload that may be in the cluster: never deployed, or already removed,
    leaves nothing to remove. A failed deployment may have left objects behind, so it counts."""
    if latest is None:
        raise Conflict(f"{what} was never deployed to {environment}: there is nothing to remove")
    if workload_removed(latest):
        raise Conflict(
            f"{what} was already removed from {environment}: deploy it again with POST /api/deploy/deployments"
        )
