"""Pure rules: reading GitLab's Pipeline Hook and naming versions."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import InvalidInput
from shared.naming import slugify

GITLAB_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S %Z", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ")


class HookAttributes(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int = Field(ge=1, le=2**63 - 1)
    ref: str = Field(min_length=1, max_length=255)
    tag: bool = False
    sha: str = Field(min_length=1, max_length=64)
    status: str = Field(max_length=32)
    url: str | None = Field(default=None, max_length=2048)
    stages: list[str] = Field(default_factory=list)
    finished_at: str | None = None


class HookProject(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int | str | None = None
    path_with_namespace: str = Field(min_length=1, max_length=255)


class HookCommit(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: str = ""
    author: dict[str, Any] = Field(default_factory=dict)


class PipelineHook(BaseModel):
    model_config = ConfigDict(extra="ignore")
    object_kind: str
    object_attributes: HookAttributes
    project: HookProject
    commit: HookCommit | None = None


def parse_pipeline_hook(body: Any) -> PipelineHook:
    try:
        hook = PipelineHook.model_validate(body)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        raise InvalidInput(f"not a GitLab Pipeline Hook body: missing or invalid {fields}") from exc
    if hook.object_kind != "pipeline":
        raise InvalidInput(f"object_kind is {hook.object_kind!r}; only 'pipeline' hooks are read")
    return hook


def parse_gitlab_time(value: str | None) -> datetime | None:
    if not value:
        return None
    for fmt in GITLAB_TIME_FORMATS:
        try:
            parsed = datetime.strptime(value.replace("UTC", "+0000"), fmt.replace("%Z", "%z"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def version_name(*, ref: str, tag: bool, finished_at: datetime | None, now: datetime) -> str:
    """The tag for tag pipelines, else ``YYYY.M.D-HHMMSS-<ref-slug>``."""
    if tag:
        return ref
    moment = (finished_at or now).astimezone(UTC)
    return f"{moment.year}.{moment.month}.{moment.day}-{moment:%H%M%S}-{slugify(ref) or 'ref'}"


def image_reference(registry: str, repository_path: str, *, ref: str, tag: bool, sha: str) -> str:
    """The image the template's CI pushes: tagged with the git tag, else the short sha."""
    return f"{registry}/{repository_path.lower()}:{ref if tag else sha[:8]}"
