"""Versioning's tables and API shapes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.db import UtcDateTime
from shared.events import utcnow


class KnownService(SQLModel, table=True):
    """The service → repository map, learned from ``service.created``."""

    __tablename__ = "versioning_services"
    service_id: str = Field(primary_key=True, max_length=32)
    project: str = Field(max_length=40)
    code: str = Field(max_length=64)
    repository_path: str = Field(index=True, max_length=255)
    scm_project_id: str = Field(index=True, max_length=255)
    repository_url: str


class PipelineBase(SQLModel):
    pipeline_id: int = Field(sa_type=BigInteger)
    status: str = Field(max_length=32)
    ref: str = Field(max_length=255)
    tag: bool = False
    sha: str = Field(max_length=64)
    url: str | None = None
    stages: str = ""  # comma separated, in order
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Pipeline(PipelineBase, table=True):
    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("service_id", "pipeline_id", name="uq_pipeline"),)
    id: int | None = Field(default=None, primary_key=True)
    service_id: str = Field(index=True, max_length=32)
    succeeded: bool = False  # a success was seen (and announced) once


class PipelinePublic(PipelineBase):
    succeeded: bool


class VersionBase(SQLModel):
    name: str = Field(max_length=128)
    sha: str = Field(max_length=64)
    ref: str = Field(max_length=255)
    tag: bool = False
    pipeline_id: int = Field(sa_type=BigInteger)
    pipeline_url: str | None = None
    commit_message: str = ""
    commit_author: str = ""
    image: str


class Version(VersionBase, table=True):
    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("service_id", "pipeline_id", name="uq_version_pipeline"),
        UniqueConstraint("service_id", "name", name="uq_version_name"),
    )
    id: int | None = Field(default=None, primary_key=True)
    service_id: str = Field(index=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class VersionPublic(VersionBase):
    created_at: datetime


class ParkedHook(SQLModel, table=True):
    """A hook for a repository not known yet, kept until its service is announced."""

    __tablename__ = "parked_hooks"
    id: int | None = Field(default=None, primary_key=True)
    repository_path: str = Field(index=True, max_length=255)
    scm_project_id: str | None = Field(default=None, index=True, max_length=255)
    body: str
    delivery_id: str | None = Field(default=None, max_length=255)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
