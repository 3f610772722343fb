"""Small request shapes shared by several services."""

from __future__ import annotations

from pydantic import BaseModel


class Toggle(BaseModel):
    enabled: bool
