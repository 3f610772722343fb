"""Pure rules: naming versions and their images (the hook itself: ``shared.gitlab_hook``)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from shared.naming import slugify

GITLAB_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S %Z", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ")


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


# A version name is also an image tag, so it follows the registries' tag grammar.
TAG_GRAMMAR = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
MAX_NAME = 128
_NOT_TAG = re.compile(r"[^A-Za-z0-9_.-]+")


def tag_name(ref: str) -> str:
    """A git tag as a registry tag: kept when it already is one (``v1.2.0``), else every run of
    other characters becomes ``-``, leading ``.``/``-`` go and it is cut to 128 characters
    (``v1/../../x`` → ``v1-..-..-x``). The version keeps the original ref beside it."""
    if TAG_GRAMMAR.match(ref):
        return ref
    name = _NOT_TAG.sub("-", ref).lstrip(".-")[:MAX_NAME]
    return name or f"tag-{hashlib.sha256(ref.encode()).hexdigest()[:8]}"


def version_name(*, ref: str, tag: bool, finished_at: datetime | None, now: datetime) -> str:
    """The tag for tag pipelines (as a registry tag), else ``YYYY.M.D-HHMMSS-<ref-slug>``."""
    if tag:
        return tag_name(ref)
    moment = (finished_at or now).astimezone(UTC)
    stamp = f"{moment.year}.{moment.month}.{moment.day}-{moment:%H%M%S}-"
    return stamp + ((slugify(ref) or "ref")[: MAX_NAME - len(stamp)]).rstrip("-")


def with_pipeline(name: str, pipeline_id: int) -> str:
    """Two pipelines that would take one name are told apart by the pipeline id."""
    suffix = f".{pipeline_id}"
    return name[: MAX_NAME - len(suffix)] + suffix


def image_reference(registry: str, repository_path: str, *, ref: str, tag: bool, sha: str) -> str:
    """The image the template's CI pushes: tagged with the git tag, else the short sha."""
    return f"{registry}/{repository_path.lower()}:{tag_name(ref) if tag else sha[:8]}"
