"""The gateway's table and API shapes (Base / Create / Update / table / Public families)."""

from __future__ import annotations

from datetime import datetime

from pydantic import StrictBool
from sqlmodel import Field, SQLModel

from services.gateway.domain import MAX_PATH, PATH_PATTERN, ROUTE_NAME, TARGET_PATTERN
from shared.db import UtcDateTime
from shared.events import utcnow
from shared.schemas import REFUSE_UNKNOWN_FIELDS, documented

PATH = documented(PATH_PATTERN, max_length=MAX_PATH)
TARGET = documented(TARGET_PATTERN)


class RouteBase(SQLModel):
    name: str = Field(max_length=64, schema_extra=documented(ROUTE_NAME))
    path: str = Field(max_length=255, schema_extra=PATH)
    service: str = Field(max_length=128, schema_extra=TARGET)  # 'project/service', a service id, or a platform one
    strip_prefix: StrictBool = True
    retryable: StrictBool = False


class RouteCreate(RouteBase):
    model_config = REFUSE_UNKNOWN_FIELDS  # a misspelt field is refused, never ignored


class RouteUpdate(SQLModel):
    """Fields left out keep their value."""

    model_config = REFUSE_UNKNOWN_FIELDS

    path: str | None = Field(default=None, schema_extra=PATH)
    service: str | None = Field(default=None, schema_extra=TARGET)
    strip_prefix: StrictBool | None = None
    retryable: StrictBool | None = None


class Route(RouteBase, table=True):
    __tablename__ = "routes"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    path: str = Field(max_length=255, unique=True)
    builtin: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    created_by: str = Field(max_length=128)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class RoutePublic(RouteBase):
    builtin: bool
    created_at: datetime
    created_by: str
    updated_at: datetime


class RouteTableEntry(SQLModel):
    """One line of the compiled table, in match order (most specific first)."""

    order: int
    name: str
    path: str
    service: str
    strip_prefix: bool
    retryable: bool
    builtin: bool


class RouteMatch(SQLModel):
    """Where a request path would go."""

    path: str
    route: RouteTableEntry
    forward_path: str
