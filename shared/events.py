"""The event envelope (CloudEvents 1.0 fields) and the data of every event Gantry publishes.

Topic name == event type. The record key is the service id, so one service's events stay in
order. Commands would be imperative; these are all facts, named in the past tense.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import PoisonEvent

DataT = TypeVar("DataT", bound=BaseModel)


class Topic(StrEnum):
    HOOK_RECEIVED = "gitlab.hook.received"
    SERVICE_CREATED = "service.created"
    PIPELINE_SUCCEEDED = "pipeline.succeeded"
    VERSION_CREATED = "version.created"
    VERSION_RELEASED = "version.released"
    DEPLOY_REQUESTED = "deploy.requested"
    DEPLOY_STATUS = "deploy.status"
    ROUTE_CHANGED = "gateway.route.changed"
    SERVICE_CHANGED = "service.changed"
    PROJECT_CHANGED = "project.changed"
    ENVIRONMENT_CHANGED = "environment.changed"
    RELEASE_WITHDRAWN = "release.withdrawn"
    RESOURCE_CHANGED = "resource.changed"
    AUDIT_RECORDED = "audit.recorded"

    @property
    def dlq(self) -> str:
        return f"{self.value}.dlq"


ALL_TOPICS: tuple[str, ...] = tuple(t.value for t in Topic) + tuple(t.dlq for t in Topic)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """One envelope for every event; ``data`` is the typed payload of ``type``."""

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: str
    source: str
    time: datetime = Field(default_factory=utcnow)
    subject: str
    correlation_id: str
    causation_id: str | None = None
    chain_started_at: datetime | None = Field(
        default=None,
        description="when the chain's first event happened (inherited from the cause); "
        "absent on a chain's first event, whose own time is the chain's start",
    )
    data: dict[str, Any]

    @property
    def chain_started(self) -> datetime:
        """When the chain this event belongs to began: its first event's time."""
        return self.chain_started_at or self.time

    def payload(self, model: builtins.type[DataT]) -> DataT:
        """The typed data; data that does not fit the event's model makes the event poison."""
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'data'}: {error['msg']}" for error in exc.errors()
            )
            raise PoisonEvent(f"{self.type} {self.id} has unusable data for {model.__name__}: {problems}") from exc


class EventData(BaseModel):
    model_config = ConfigDict(extra="ignore")
    service_id: str
    project: str
    service: str

    @property
    def record_key(self) -> str:
        """One service's events share a key, so they stay in order."""
        return self.service_id

    @property
    def subject(self) -> str:
        return f"{self.project}/{self.service}"


class HookReceived(BaseModel):
    """A GitLab hook as the front door received it, its token checked; keyed by the GitLab project."""

    scm_project_id: str = Field(max_length=255)
    event: str = Field(max_length=64)
    delivery_id: str = Field(max_length=255)
    hook: dict[str, Any]  # the body as received, free text trimmed (shared.gitlab_hook.bounded)


class ServiceCreated(EventData):
    name: str
    group: str
    type: str
    repository_url: str
    repository_web_url: str
    repository_path: str
    scm_project_id: str


class PipelineSucceeded(EventData):
    pipeline_id: int
    pipeline_url: str | None = None
    ref: str
    tag: bool = False
    sha: str
    commit_message: str = ""
    commit_author: str = ""
    finished_at: datetime | None = None


class VersionCreated(EventData):
    version: str
    sha: str
    ref: str
    tag: bool = False  # made by a tag pipeline (``ref`` is then the tag): auto-release's ``tags`` switch
    pipeline_id: int
    pipeline_url: str | None = None
    image: str
    commit_message: str = ""
    commit_author: str = ""


class Placement(EventData):
    """Which version (and image) of which service goes to which environment (and namespace)."""

    environment: str
    namespace: str
    version: str
    image: str

    @staticmethod
    def of(source: object) -> dict[str, Any]:
        """The placement of anything that carries one: a release, a deployment, what a track runs."""
        return {name: getattr(source, name) for name in Placement.model_fields}


class VersionReleased(Placement):
    trigger: Literal["manual", "auto"]
    by: str


# "undeploy": take the service's workload out of the cluster (both tracks, its Service and Ingress)
DeployAction = Literal["deploy", "scale", "rollback", "promote", "abort", "undeploy"]


class DeployRequested(Placement):
    deployment_id: str
    replicas: int = Field(ge=1)
    strategy: Literal["rolling", "canary"] = "rolling"
    action: DeployAction = "deploy"
    # name -> revision of each resource; never their values: the deploy worker reads them from its
    # own store (None: a resource from before revisions, as the deployment recorded it)
    resources: dict[str, int | None] = Field(default_factory=dict)
    trigger: Literal["manual", "auto"]
    by: str

    @field_validator("resources", mode="before")
    @classmethod
    def _names_and_revisions(cls, resources: Any) -> Any:
        """Requests queued before they named revisions carried each resource's body: keep its revision."""
        if not isinstance(resources, dict):
            return resources
        return {name: body.get("revision") if isinstance(body, dict) else body for name, body in resources.items()}


class DeployStatus(EventData):
    deployment_id: str
    environment: str
    version: str
    track: Literal["stable", "canary"] = "stable"
    # "removed": the workload was taken out of the cluster (undeploy); it runs nowhere there now
    state: Literal["rendered", "progressing", "succeeded", "failed", "removed"]
    desired: int
    current: int = 0
    updated: int = 0
    available: int = 0
    message: str = ""


class RouteChanged(BaseModel):
    """A gateway route as it is now (as it was, for ``deleted``); ``service`` is the target:
    'project/service', a service id, or a platform service."""

    name: str
    path: str
    service: str
    strip_prefix: bool = True  # absent from events older than the field: the gateway's default
    change: Literal["created", "updated", "deleted"]

    @property
    def record_key(self) -> str:
        return self.name

    @property
    def subject(self) -> str:
        return self.name


class ServiceChanged(EventData):
    """Catalog changed a service: renamed, disabled, enabled, or deleted (its repository archived).

    A disabled service keeps its versions but is neither released nor deployed; a deleted one
    is gone for good (its code can be used again)."""

    name: str
    enabled: bool
    change: Literal["updated", "disabled", "enabled", "deleted"]


class ProjectChanged(BaseModel):
    """Catalog deleted a project (only ever an empty one); keyed by the project's code."""

    project: str
    change: Literal["deleted"]

    @property
    def record_key(self) -> str:
        return self.project

    @property
    def subject(self) -> str:
        return self.project


class EnvironmentChanged(BaseModel):
    """Release created, changed or deleted an environment; keyed by the environment's code.

    Carries what the other services need of it: its namespace, and the Ingress settings the
    gateway's routes are rendered with."""

    code: str
    name: str
    tier: str
    namespace: str
    ingress_class: str | None = None
    ingress_host: str | None = None
    change: Literal["created", "updated", "deleted"]

    @property
    def record_key(self) -> str:
        return self.code

    @property
    def subject(self) -> str:
        return self.code


class ReleaseWithdrawn(EventData):
    """The service is no longer released to the environment: none of its versions may be
    deployed there until it is released again."""

    environment: str
    by: str


class ResourceChanged(BaseModel):
    """Deploy created, revised or deleted a resource; names its revision, never its values."""

    environment: str
    name: str
    type: str
    revision: int
    change: Literal["created", "updated", "deleted"]

    @property
    def record_key(self) -> str:
        return f"{self.environment}/{self.name}"

    @property
    def subject(self) -> str:
        return self.record_key


class AuditRecorded(BaseModel):
    """A write request to a service's own API and what came of it, recorded by that service
    (the request's correlation id is the envelope's). ``changed`` says the record was committed
    in the same transaction as the change it made; a refused or failed request changed nothing."""

    request_id: str
    recorded_by: str  # the service that answered the request
    action: str  # "<service>.<operation>", e.g. "deploy.create_deployment"
    method: str
    path: str
    actor: str | None  # None when the request carried no valid token
    roles: list[str]
    target: dict[str, str]  # ids from the path and the body: project, service, environment, resource, version, …
    outcome: int  # the HTTP status answered
    reason: str | None = None  # the error's detail, for an outcome of 400 or more
    changed: bool
    at: datetime

    @property
    def record_key(self) -> str:
        return self.subject

    @property
    def subject(self) -> str:
        """The most specific target named: 'project/service', else the project, environment or action."""
        target = self.target
        if "project" in target and "service" in target:
            return f"{target['project']}/{target['service']}"
        return target.get("project") or target.get("environment") or self.action


EVENT_DATA: dict[str, type[BaseModel]] = {
    Topic.HOOK_RECEIVED: HookReceived,
    Topic.SERVICE_CREATED: ServiceCreated,
    Topic.PIPELINE_SUCCEEDED: PipelineSucceeded,
    Topic.VERSION_CREATED: VersionCreated,
    Topic.VERSION_RELEASED: VersionReleased,
    Topic.DEPLOY_REQUESTED: DeployRequested,
    Topic.DEPLOY_STATUS: DeployStatus,
    Topic.ROUTE_CHANGED: RouteChanged,
    Topic.SERVICE_CHANGED: ServiceChanged,
    Topic.PROJECT_CHANGED: ProjectChanged,
    Topic.ENVIRONMENT_CHANGED: EnvironmentChanged,
    Topic.RELEASE_WITHDRAWN: ReleaseWithdrawn,
    Topic.RESOURCE_CHANGED: ResourceChanged,
    Topic.AUDIT_RECORDED: AuditRecorded,
}


# What an outbox can queue: the data of any event but the hook (which the webhook door publishes).
Emittable = EventData | RouteChanged | ProjectChanged | EnvironmentChanged | ResourceChanged | AuditRecorded

TOPIC_OF: dict[type[BaseModel], Topic] = {model: Topic(topic) for topic, model in EVENT_DATA.items()}


def new_event(
    topic: Topic,
    data: BaseModel,
    *,
    source: str,
    subject: str,
    correlation_id: str | None = None,
    cause: Envelope | None = None,
) -> Envelope:
    """Build an envelope; a caused event inherits the chain's correlation id."""
    if cause is not None:
        correlation_id = cause.correlation_id
    return Envelope(
        type=topic.value,
        source=source,
        subject=subject,
        correlation_id=correlation_id or str(uuid.uuid4()),
        causation_id=cause.id if cause else None,
        chain_started_at=cause.chain_started if cause else None,
        data=data.model_dump(mode="json"),
    )
