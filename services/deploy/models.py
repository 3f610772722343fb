"""Deploy's tables and API shapes (Base / Create / table / Public families).

Services are known here only through ``version.released``: ``ReleasedVersion`` maps a project and
service code to its service id, per environment. The other tables are keyed by service id.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import StrictBool, field_validator, model_validator
from sqlalchemy import JSON, Index, String, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from services.deploy import domain
from services.deploy.environments import KnownEnvironment
from services.deploy.revisions import ResourceRevision
from services.deploy.routes import KnownRoute
from shared.db import UtcDateTime, inserted_together
from shared.events import DeployAction, utcnow
from shared.schemas import REFUSE_UNKNOWN_FIELDS, documented

Strategy = Literal["rolling", "canary"]
Track = Literal["stable", "canary"]
DeploymentState = Literal["requested", "rendered", "progressing", "succeeded", "failed", "removed"]
Trigger = Literal["manual", "auto"]
ServiceState = Literal["enabled", "disabled", "deleted"]
TIMESTAMP = UtcDateTime
# Bounds on what people put in their resources (a deploy.requested names them and their revisions).
# Shown in the API's schema; checked by domain.validate_replicas, whose refusal says what to do.
REPLICAS_BOUNDS = {"minimum": domain.MIN_REPLICAS, "maximum": domain.MAX_REPLICAS}
MAX_RESOURCE_DATA_BYTES = 16_384
MAX_RESOURCES_PER_DEPLOYMENT = 16


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=TIMESTAMP)


# --- resources (organization level, per environment) -------------------------------------------


class ResourceBase(SQLModel):
    name: str = Field(max_length=63, schema_extra=documented(domain.RESOURCE_NAME))
    type: str = Field(max_length=32, schema_extra=documented(domain.RESOURCE_TYPE))  # database | cache | queue | …
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


def bounded_resource_data(data: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(data, ensure_ascii=False).encode())
    if size > MAX_RESOURCE_DATA_BYTES:
        raise ValueError(
            f"takes {size} bytes as JSON, more than the {MAX_RESOURCE_DATA_BYTES} a resource may hold: "
            "keep connection settings here, and larger configuration in the service's own files"
        )
    return data


MAX_SECRET_KEYS = 64


def _keys() -> Any:
    return Field(default_factory=list, max_length=MAX_SECRET_KEYS)


class ResourceCreate(ResourceBase):
    model_config = REFUSE_UNKNOWN_FIELDS
    secret: list[str] = _keys()  # keys held secret besides the default ones (secrecy.py)

    @field_validator("data")
    @classmethod
    def _bounded(cls, data: dict[str, Any]) -> dict[str, Any]:
        return bounded_resource_data(data)


class ResourceUpdate(SQLModel):
    """The whole new content of a resource (its name is the path's): it becomes a new revision."""

    model_config = REFUSE_UNKNOWN_FIELDS
    type: str = Field(max_length=32, schema_extra=documented(domain.RESOURCE_TYPE))
    data: dict[str, Any] = Field(default_factory=dict)
    secret: list[str] = _keys()  # besides the default ones and those secret in earlier revisions
    keep: list[str] = _keys()  # secret keys whose value stays as it is
    remove: list[str] = _keys()  # secret keys whose value goes

    @field_validator("data")
    @classmethod
    def _bounded(cls, data: dict[str, Any]) -> dict[str, Any]:
        return bounded_resource_data(data)


class Resource(ResourceBase, table=True):
    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("environment", "name", name="uq_resource_name"),)
    id: int | None = Field(default=None, primary_key=True)
    environment: str = Field(max_length=63, index=True)
    created_at: datetime = _created()
    created_by: str = Field(max_length=128)
    revision: int = 1  # the current one; every revision is kept in ResourceRevision
    updated_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    updated_by: str | None = Field(default=None, max_length=128)
    # secret values: masked in data, sealed here (None: a row from before values were sealed)
    secret: list[str] | None = Field(default=None, sa_type=JSON)
    sealed: dict[str, str] | None = Field(default=None, sa_type=JSON)


class ResourcePublic(ResourceBase):
    """``data`` with every secret value masked; ``secret``: the keys held secret, ``secret_set``:
    those that have a value."""

    environment: str
    revision: int
    secret: list[str]
    secret_set: list[str]
    created_at: datetime
    created_by: str
    updated_at: datetime | None
    updated_by: str | None


# --- versions released to an environment (learned from version.released) ------------------------


class PlacementColumns(SQLModel):
    """The columns of ``shared.events.Placement``: which version of which service, in which environment."""

    service_id: str = Field(max_length=64, index=True)
    project: str = Field(max_length=40)
    service: str = Field(max_length=64)
    environment: str = Field(max_length=63)
    namespace: str = Field(max_length=63)
    version: str = Field(max_length=128)
    image: str


class ReleasedVersion(PlacementColumns, table=True):
    __tablename__ = "released_versions"
    __table_args__ = (UniqueConstraint("service_id", "environment", "version", name="uq_released_version"),)
    id: int | None = Field(default=None, primary_key=True)
    released_at: datetime = _created()
    # set by release.withdrawn: no longer released there (a new release clears it)
    withdrawn_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)


class KnownService(SQLModel, table=True):
    """A service as catalog announced it on ``service.changed`` (see ``known_services``)."""

    __tablename__ = "deploy_services"
    service_id: str = Field(primary_key=True, max_length=64)
    project: str = Field(max_length=40)
    service: str = Field(max_length=64)
    name: str = Field(max_length=128)
    state: ServiceState = Field(default="enabled", sa_type=String(16))
    updated_at: datetime = _created()


# --- deployments ------------------------------------------------------------------------------


class DeploymentCreate(SQLModel):
    model_config = REFUSE_UNKNOWN_FIELDS
    project: str
    service: str
    environment: str
    version: str = Field(description='a version released to the environment, or "latest" (the one released last)')
    # default: the resources of the last deployment
    resources: list[str] | None = Field(default=None, max_length=MAX_RESOURCES_PER_DEPLOYMENT)
    # default: what the track runs now, else 1
    replicas: int | None = Field(default=None, schema_extra={"json_schema_extra": REPLICAS_BOUNDS})
    strategy: Strategy = "rolling"
    confirm_resource_change: StrictBool = False


class Deployment(PlacementColumns, table=True):
    __tablename__ = "deployments"
    # Each event of the auto-deploy chain reads a track's newest deployment and whether one was made
    # by hand since the last removal: indexed, so that read does not grow with the history.
    __table_args__ = (
        Index("ix_deployments_track_history", "service_id", "environment", "track", "created_at"),
        Index("ix_deployments_by_action", "service_id", "environment", "action", "created_at"),
        # the requests not applied yet, which deploy's lane looks for before it applies one
        Index(
            "ix_deployments_requested",
            "service_id",
            "environment",
            sqlite_where=text("state = 'requested'"),
            postgresql_where=text("state = 'requested'"),
        ),
    )
    id: str = Field(primary_key=True, max_length=32)
    environment: str = Field(max_length=63, index=True)
    replicas: int
    strategy: Strategy = Field(sa_type=String(16))
    action: DeployAction = Field(sa_type=String(16))
    track: Track = Field(sa_type=String(16))
    resources: list[str] = Field(default_factory=list, sa_type=JSON)
    resource_snapshot: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    trigger: Trigger = Field(sa_type=String(16))
    by: str = Field(max_length=128)
    correlation_id: str = Field(max_length=64)
    # "<user>:<Idempotency-Key>" of the request that made it: a resent request returns this one
    request_key: str | None = Field(default=None, unique=True, max_length=300)
    request_fingerprint: str | None = Field(default=None, max_length=64)  # of that request: a resend must match
    state: DeploymentState = Field(default="requested", sa_type=String(16))
    desired: int = 0
    current: int = 0
    updated: int = 0
    available: int = 0
    message: str = ""
    created_at: datetime = _created()
    finished_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)

    @property
    def resource_revisions(self) -> dict[str, int]:
        """The revision of each resource it used (kept in its snapshot)."""
        return domain.resource_revisions(self.resource_snapshot)


class DeploymentPublic(SQLModel):
    id: str
    project: str
    service: str
    environment: str
    namespace: str
    version: str
    image: str
    replicas: int
    strategy: Strategy
    action: DeployAction
    track: Track
    resources: list[str]
    resource_revisions: dict[str, int]
    trigger: Trigger
    by: str
    state: DeploymentState
    desired: int | None
    current: int | None
    updated: int | None
    available: int | None
    message: str
    created_at: datetime
    finished_at: datetime | None

    @model_validator(mode="after")
    def _no_counts_when_rendered(self) -> DeploymentPublic:
        return _unknown_counts(self)


CountsT = TypeVar("CountsT", "DeploymentPublic", "TrackState")


def _unknown_counts(shape: CountsT) -> CountsT:
    """Rendered manifests run nowhere: no pod counts (null) rather than 0 available, which reads as an outage."""
    if not domain.counts_known(shape.state):
        shape.desired = shape.current = shape.updated = shape.available = None
    return shape


# --- per (service, environment): last resources, auto-deploy; per track: what runs ---------------


class ResourceChoice(SQLModel, table=True):
    """The resources of the last deployment, offered again by default."""

    __tablename__ = "resource_choices"
    service_id: str = Field(primary_key=True, max_length=64)
    environment: str = Field(primary_key=True, max_length=63)
    resources: list[str] = Field(default_factory=list, sa_type=JSON)
    snapshot: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    updated_at: datetime = _created()


class AutoDeployRule(SQLModel, table=True):
    __tablename__ = "auto_deploy_rules"
    service_id: str = Field(primary_key=True, max_length=64)
    environment: str = Field(primary_key=True, max_length=63)
    enabled: bool = False
    updated_at: datetime = _created()
    updated_by: str = Field(max_length=128)


class Instance(PlacementColumns, table=True):
    """What the cluster runs for one track, as last applied (``state`` is the last outcome)."""

    __tablename__ = "instances"
    service_id: str = Field(primary_key=True, max_length=64)
    environment: str = Field(primary_key=True, max_length=63)
    track: Track = Field(primary_key=True, sa_type=String(16))
    replicas: int
    resources: list[str] = Field(default_factory=list, sa_type=JSON)
    resource_snapshot: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    deployment_id: str = Field(max_length=32)
    state: DeploymentState = Field(sa_type=String(16))
    message: str = ""
    updated_at: datetime = _created()


# --- running state ------------------------------------------------------------------------------


class TrackState(SQLModel):
    track: Track
    version: str
    image: str
    replicas: int  # as deployed; the counts below are the cluster's (null when nothing runs them)
    state: str
    desired: int | None
    current: int | None
    updated: int | None
    available: int | None
    message: str
    deployment_id: str
    resource_revisions: dict[str, int] = Field(default_factory=dict)  # what this track runs with

    @model_validator(mode="after")
    def _no_counts_when_rendered(self) -> TrackState:
        return _unknown_counts(self)


class DeployingVersion(SQLModel):
    deployment_id: str
    version: str
    action: DeployAction
    track: Track
    state: DeploymentState


class RemovalNote(SQLModel):
    """The workload was removed from the cluster (undeploy): it runs nowhere in the environment."""

    deployment_id: str
    by: str
    at: datetime | None


class RunningState(SQLModel):
    project: str
    service: str
    environment: str
    namespace: str
    stable: TrackState | None
    canary: TrackState | None
    deploying: list[DeployingVersion]
    auto_deploy: bool
    resources: list[str]
    removed: RemovalNote | None = None  # set when the last deployment took the workload out


class AutoDeployPublic(SQLModel):
    project: str
    service: str
    environment: str
    enabled: bool
    updated_by: str
    updated_at: datetime


class ReplicasUpdate(SQLModel):
    model_config = REFUSE_UNKNOWN_FIELDS
    replicas: int = Field(schema_extra={"json_schema_extra": REPLICAS_BOUNDS})


class AutoDeployUpdate(SQLModel):
    model_config = REFUSE_UNKNOWN_FIELDS
    enabled: StrictBool


class RollbackRequest(SQLModel):
    model_config = REFUSE_UNKNOWN_FIELDS
    version: str | None = None


DEPLOY_TABLES: tuple[type[SQLModel], ...] = (
    KnownEnvironment,
    KnownService,
    Resource,
    ResourceRevision,
    ReleasedVersion,
    Deployment,
    ResourceChoice,
    AutoDeployRule,
    Instance,
    KnownRoute,
)

inserted_together(ReleasedVersion)  # a batch's new rows in one INSERT
