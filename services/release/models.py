"""Release's tables and API shapes (Base / Create / table / Public families).

Table names carry the service's name where another service could want the same word: every
service's tables share SQLModel's one metadata when several services load in one process.
"""

from __future__ import annotations

import json
from datetime import datetime

from pydantic import StrictBool
from sqlalchemy import BigInteger, Column, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel
from sqlmodel._compat import SQLModelConfig

from services.release import domain
from services.release.domain import DEFAULT_REFS, Tier, Trigger
from shared.db import UtcDateTime, inserted_together
from shared.events import utcnow
from shared.schemas import REFUSE_UNKNOWN_FIELDS, documented


class EnvironmentBase(SQLModel):
    code: str = Field(schema_extra=documented(domain.ENVIRONMENT_CODE, max_length=40))
    name: str = Field(schema_extra=documented(domain.NAME_PATTERN, max_length=128))
    tier: str = Field(schema_extra=documented(enum=list(domain.TIERS)))


INGRESS_CLASS = documented(domain.INGRESS_CLASS_PATTERN, max_length=253)
INGRESS_HOST = documented(domain.INGRESS_HOST_PATTERN, max_length=253)


class EnvironmentCreate(EnvironmentBase):
    model_config = REFUSE_UNKNOWN_FIELDS
    namespace: str | None = Field(default=None, schema_extra=documented(domain.NAMESPACE_PATTERN, max_length=63))
    ingress_class: str | None = Field(default=None, schema_extra=INGRESS_CLASS)
    ingress_host: str | None = Field(default=None, schema_extra=INGRESS_HOST)


class EnvironmentUpdate(SQLModel):
    """What may change of an environment; a field left out keeps its value, null clears an ingress one."""

    model_config = REFUSE_UNKNOWN_FIELDS
    name: str | None = Field(default=None, schema_extra=documented(domain.NAME_PATTERN, max_length=128, nullable=False))
    ingress_class: str | None = Field(default=None, schema_extra=INGRESS_CLASS)
    ingress_host: str | None = Field(default=None, schema_extra=INGRESS_HOST)


class Environment(EnvironmentBase, table=True):
    __tablename__ = "environments"
    code: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=128)
    tier: Tier = Field(sa_type=String(16))
    namespace: str = Field(unique=True, max_length=63)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    created_by: str = Field(max_length=128)
    ingress_class: str | None = Field(default=None, max_length=253)
    ingress_host: str | None = Field(default=None, max_length=253)
    # when environment.changed last carried it; null for environments made before it was announced
    announced_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class EnvironmentPublic(EnvironmentBase):
    namespace: str
    ingress_class: str | None
    ingress_host: str | None
    created_at: datetime
    created_by: str


class KnownService(SQLModel, table=True):
    """A service as catalog announced it, with its auto-release setting."""

    __tablename__ = "release_services"
    __table_args__ = (UniqueConstraint("project", "code", name="uq_release_service_code"),)
    id: str = Field(primary_key=True, max_length=64)
    project: str = Field(max_length=40)
    code: str = Field(max_length=64)
    name: str = Field(max_length=128)
    auto_release: bool = False
    auto_release_refs: str | None = None  # a JSON list of glob patterns; null: the default branch
    auto_release_tags: bool = False
    enabled: bool = True  # catalog disables and enables; a disabled service is not released
    # Bumped by every use case that reads bindings and versions together, so that concurrent
    # ones on the same service serialize (a row lock on PostgreSQL, the write lock on SQLite).
    revision: int = 0
    registered_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)

    def refs(self) -> tuple[str, ...]:
        if self.auto_release_refs is None:
            return DEFAULT_REFS
        return tuple(json.loads(self.auto_release_refs))


class KnownVersion(SQLModel, table=True):
    """A version versioning announced; the newest is the one with the highest id."""

    __tablename__ = "release_versions"
    __table_args__ = (UniqueConstraint("service_id", "version", name="uq_release_version"),)
    id: int | None = Field(default=None, primary_key=True)
    service_id: str = Field(foreign_key="release_services.id", index=True, max_length=64)
    version: str = Field(max_length=128)
    image: str = Field(max_length=512)
    sha: str = Field(max_length=64)
    ref: str = Field(max_length=255)
    tag: bool = False
    pipeline_id: int = Field(sa_type=BigInteger)
    pipeline_url: str | None = None
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Binding(SQLModel, table=True):
    """The service is released to this environment."""

    __tablename__ = "release_bindings"
    __table_args__ = (UniqueConstraint("service_id", "environment", name="uq_release_binding"),)
    id: int | None = Field(default=None, primary_key=True)
    service_id: str = Field(foreign_key="release_services.id", index=True, max_length=64)
    environment: str = Field(foreign_key="environments.code", max_length=40)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    created_by: str = Field(max_length=128)


class ReleaseBase(SQLModel):
    environment: str
    namespace: str
    version: str
    image: str
    trigger: str
    by: str
    released_at: datetime


class Release(ReleaseBase, table=True):
    """One version released to one environment, with the deployment files sent there."""

    __tablename__ = "releases"
    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True, max_length=64)
    service_id: str = Field(foreign_key="release_services.id", index=True, max_length=64)
    environment: str = Field(foreign_key="environments.code", max_length=40)
    namespace: str = Field(max_length=63)
    version: str = Field(max_length=128)
    image: str = Field(max_length=512)
    trigger: Trigger = Field(sa_type=String(16))
    by: str = Field(max_length=128)
    released_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    correlation_id: str = Field(max_length=64)
    deployment_files: str = Field(sa_column=Column(Text, nullable=False))


class ReleasePublic(ReleaseBase):
    id: int
    event_id: str
    correlation_id: str
    deployment_files: str


class Running(SQLModel, table=True):
    """Where a service runs, from deploy's statuses: a row per (environment, track) until removed."""

    __tablename__ = "release_running"
    __table_args__ = (UniqueConstraint("service_id", "environment", "track", name="uq_release_running"),)
    id: int | None = Field(default=None, primary_key=True)
    service_id: str = Field(index=True, max_length=64)
    project: str = Field(max_length=40)
    service: str = Field(max_length=64)
    environment: str = Field(index=True, max_length=40)
    track: str = Field(max_length=16)
    version: str = Field(max_length=128)
    state: str = Field(max_length=16)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class ReleaseCreate(SQLModel):
    model_config = REFUSE_UNKNOWN_FIELDS
    environment: str


class VersionReleaseCreate(SQLModel):
    model_config = REFUSE_UNKNOWN_FIELDS
    version: str


class AutoReleaseUpdate(SQLModel):
    """Auto-release's settings, all at once (PUT): refs default to the default branch, tags to off."""

    model_config = SQLModelConfig(extra="forbid", json_schema_extra=domain.AUTO_RELEASE_RULE)
    enabled: StrictBool
    refs: list[str] | None = Field(
        default=None, schema_extra=documented(maxItems=domain.MAX_REF_PATTERNS, items=domain.REF_PATTERN_ITEM)
    )
    tags: StrictBool = False


class LatestRelease(SQLModel):
    version: str
    trigger: str
    by: str
    released_at: datetime


class ReleaseTarget(SQLModel):
    """An environment the service is released to, and what was released there last."""

    environment: str
    name: str
    namespace: str
    tier: str
    released_since: datetime
    released_by: str
    latest: LatestRelease | None = None


class ReleaseStarted(ReleaseTarget):
    """A new environment of the service, and which version went there at once (or why none did)."""

    version_choice: str


class ServiceReleases(SQLModel):
    service_id: str
    project: str
    service: str
    enabled: bool
    auto_release: bool
    auto_release_refs: list[str]
    auto_release_tags: bool
    environments: list[ReleaseTarget]


TABLES: tuple[type[SQLModel], ...] = (Environment, KnownService, KnownVersion, Binding, Release, Running)

inserted_together(KnownVersion, Release, Running)  # a batch's new rows in one INSERT each
