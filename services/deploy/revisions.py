"""Every revision of every resource, kept for good.

A resource's create and each update make a revision, numbered 1, 2, … per name in an environment.
Numbers are never reused, not even after the resource is deleted and made again, so the revision
a deployment recorded always names one set of values.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.db import UtcDateTime
from shared.events import utcnow


class ResourceRevision(SQLModel, table=True):
    __tablename__ = "resource_revisions"
    __table_args__ = (UniqueConstraint("environment", "name", "revision", name="uq_resource_revision"),)
    id: int | None = Field(default=None, primary_key=True)
    environment: str = Field(max_length=63, index=True)
    name: str = Field(max_length=63)
    revision: int
    type: str = Field(max_length=32)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    created_by: str = Field(max_length=128)
    secret: list[str] | None = Field(default=None, sa_type=JSON)  # as on Resource
    sealed: dict[str, str] | None = Field(default=None, sa_type=JSON)


class ResourceRevisionPublic(SQLModel):
    revision: int
    type: str
    data: dict[str, Any]  # secret values masked
    secret: list[str]
    secret_set: list[str]
    created_at: datetime
    created_by: str
