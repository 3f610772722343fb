"""Versioning's tables and API shapes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.db import UtcDateTime, inserted_together
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
    deleted: bool = False  # catalog deleted the service: its repository's hooks make no version


class PipelineBase(SQLModel):
    pipeline_id: int = Field(sa_type=BigInteger)
    status: str = Field(max_length=32)
    ref: str = Field(max_length=255)
    tag: bool = False
    sha: str = Field(max_length=64)
    url: str | None = None
    created_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    succeeded: bool = False  # a success that counts was seen (and announced) once
    version: str | None = Field(default=None, max_length=128)  # the version it made or was linked to
    version_made: bool = False  # False with a version: the commit already had it
    no_version_reason: str | None = None  # why a pipeline GitLab calls successful made none


class Pipeline(PipelineBase, table=True):
    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("service_id", "pipeline_id", name="uq_pipeline"),)
    id: int | None = Field(default=None, primary_key=True)
    service_id: str = Field(index=True, max_length=32)
    stages: str = ""  # comma separated, in order
    newest_job_id: int | None = Field(default=None, sa_type=BigInteger)  # tells an older hook from a newer


class JobBase(SQLModel):
    job_id: int = Field(sa_type=BigInteger)
    stage: str = Field(default="", max_length=255)
    name: str = Field(max_length=255)
    status: str = Field(max_length=32)
    created_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    allow_failure: bool = False
    when: str | None = Field(default=None, max_length=32)
    manual: bool = False


class PipelineJob(JobBase, table=True):
    """One attempt of one job of a pipeline, as its newest hook listed it."""

    __tablename__ = "pipeline_jobs"
    __table_args__ = (UniqueConstraint("pipeline_row", "job_id", name="uq_pipeline_job"),)
    id: int | None = Field(default=None, primary_key=True)
    pipeline_row: int = Field(index=True)


class JobPublic(JobBase):
    latest: bool  # the job's latest attempt: the one that counts


class StagePublic(SQLModel):
    name: str
    status: str | None  # from its jobs' latest attempts; None when no hook listed its jobs
    jobs: list[JobPublic]


class PipelinePublic(PipelineBase):
    stages: list[StagePublic]


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
    # Each successful pipeline reads its service's versions of its pipeline, of its commit and of the
    # name it would get, in one statement: each term indexed, so that read does not grow with them.
    __table_args__ = (
        UniqueConstraint("service_id", "pipeline_id", name="uq_version_pipeline"),
        UniqueConstraint("service_id", "name", name="uq_version_name"),
        Index("ix_versions_commit", "service_id", "sha"),
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


inserted_together(Pipeline, PipelineJob, Version)  # a batch's new rows in one INSERT each
