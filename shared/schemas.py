"""Small request shapes shared by several services."""

from __future__ import annotations

from pydantic import BaseModel
from sqlmodel._compat import SQLModelConfig


class Toggle(BaseModel):
    enabled: bool


# A request body's config: a misspelt or unknown field is refused (422 naming it), never ignored
# (`{"replica": 5}` once deployed the default 3). SQLModel types its models' config as its own
# TypedDict, which it does not re-export: this is the one place that reaches for it.
REFUSE_UNKNOWN_FIELDS = SQLModelConfig(extra="forbid")
