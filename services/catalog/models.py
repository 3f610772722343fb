"""Catalog's tables and API shapes (Base / Create / table / Public families)."""

from __future__ import annotations

from datetime import datetime

from pydantic import StrictBool
from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from services.catalog.domain import NAME_PATTERN, PROJECT_CODE, SERVICE_CODE_PATTERN, group_pattern
from shared.db import UtcDateTime
from shared.events import utcnow
from shared.schemas import REFUSE_UNKNOWN_FIELDS, documented


class ProjectBase(SQLModel):
    code: str = Field(max_length=40, schema_extra=documented(PROJECT_CODE))
    name: str = Field(max_length=128, schema_extra=documented(NAME_PATTERN))
    gitlab_group: str = Field(max_length=255, schema_extra=documented(group_pattern, max_length=128))


class ProjectCreate(ProjectBase):
    model_config = REFUSE_UNKNOWN_FIELDS


class Project(ProjectBase, table=True):
    __tablename__ = "projects"
    code: str = Field(primary_key=True, max_length=40)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    created_by: str = Field(max_length=128)


class ProjectPublic(ProjectBase):
    created_at: datetime


class ServiceBase(SQLModel):
    code: str = Field(max_length=64, schema_extra=documented(SERVICE_CODE_PATTERN))
    name: str = Field(max_length=128, schema_extra=documented(NAME_PATTERN))
    group: str = Field(max_length=128, schema_extra=documented(group_pattern))
    type: str = Field(max_length=64)


class ServiceCreate(ServiceBase):
    model_config = REFUSE_UNKNOWN_FIELDS


class ServiceUpdate(SQLModel):
    """What a service's owners may change: its name, and whether it is enabled."""

    model_config = REFUSE_UNKNOWN_FIELDS
    name: str | None = Field(default=None, max_length=128, schema_extra=documented(NAME_PATTERN))
    enabled: StrictBool | None = None


class Service(ServiceBase, table=True):
    __tablename__ = "services"
    __table_args__ = (
        UniqueConstraint("project", "code", name="uq_service_code"),
        UniqueConstraint("project", "slug", name="uq_service_slug"),
        UniqueConstraint("workload", name="uq_service_workload"),
    )
    id: str = Field(primary_key=True, max_length=32)
    project: str = Field(foreign_key="projects.code", index=True, max_length=40)
    slug: str = Field(max_length=63)  # the derived name inside the project (repository path)
    workload: str = Field(max_length=63)  # the Kubernetes name, <project>-<code>, unique everywhere
    repository_url: str
    repository_web_url: str
    repository_path: str
    scm_project_id: str = Field(max_length=255)
    # a disabled service keeps its versions but is neither released nor deployed
    enabled: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    created_by: str = Field(max_length=128)


class ServicePublic(ServiceBase):
    id: str
    project: str
    slug: str
    repository_url: str
    repository_web_url: str
    repository_path: str
    scm_project_id: str
    enabled: bool
    created_at: datetime
    created_by: str


class ServiceTypePublic(SQLModel):
    code: str
    name: str
    description: str


class CodeCheck(SQLModel):
    code: str
    available: bool
    reason: str | None = None
