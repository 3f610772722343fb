"""Pure rules: when a pipeline makes a version, how its progress reads, how versions and their
images are named (the hook itself: ``shared.gitlab_hook``).

The guide: "A version is the record of one code commit: each pushed change produces a new version,
but only when every stage of the service's CI pipeline succeeded. The detail page shows the
pipeline's progress and the list of versions."
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from shared.naming import slugify

FINISHED = frozenset({"success", "failed", "canceled", "skipped"})
ACTIVE = frozenset({"running", "pending", "preparing", "waiting_for_resource"})
JOB_PASSED = frozenset({"success", "skipped"})  # a job GitLab skipped by its rules failed nothing


class JobFacts(Protocol):
    """One attempt of one job, as a hook carries it or as versioning keeps it."""

    @property
    def job_id(self) -> int: ...
    @property
    def stage(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def allow_failure(self) -> bool: ...
    @property
    def when(self) -> str | None: ...
    @property
    def manual(self) -> bool: ...


class VersionFacts(Protocol):
    @property
    def ref(self) -> str: ...
    @property
    def tag(self) -> bool: ...


J = TypeVar("J", bound=JobFacts)
V = TypeVar("V", bound=VersionFacts)


def latest_attempts(jobs: Iterable[J]) -> list[J]:
    """Each job by its latest attempt: a retried job appears once per attempt, the highest id
    being the latest. In the order the jobs first appear."""
    latest: dict[tuple[str, str], J] = {}
    for job in jobs:
        key = (job.stage, job.name)
        if key not in latest or job.job_id > latest[key].job_id:
            latest[key] = job
    return list(latest.values())


def manual_not_run(job: JobFacts) -> bool:
    """A manual job nobody played: it is no stage's failure."""
    return (job.manual or job.when == "manual") and job.status in ("manual", "created", "skipped")


def no_version_reason(jobs: Sequence[JobFacts]) -> str | None:
    """Why a pipeline GitLab calls successful makes no version, or ``None`` when it makes one:
    "only when every stage of the service's CI pipeline succeeded" — every job's latest attempt,
    the jobs allowed to fail and manual jobs not run aside. A hook that lists no jobs (an older
    sender, or jobs dropped to fit the broker) is judged by the pipeline's status alone."""
    blocking = [
        job
        for job in latest_attempts(jobs)
        if not job.allow_failure and not manual_not_run(job) and job.status not in JOB_PASSED
    ]
    if not blocking:
        return None
    named = "; ".join(f"job {job.name!r} (stage {job.stage!r}) {job.status}, job id {job.job_id}" for job in blocking)
    return f"not every stage succeeded — latest attempt of {named}: retry it and a success makes the version"


def hook_is_older(*, seen_status: str, seen_newest_job: int | None, status: str, newest_job: int | None) -> bool:
    """Hooks arrive out of order. One that knows fewer job attempts than the pipeline shows is
    older; with the same attempts, a finished pipeline never goes back to running or pending
    (GitLab's retry makes new attempts, so a retried pipeline's ``running`` still counts)."""
    if seen_newest_job is not None and newest_job is not None and newest_job != seen_newest_job:
        return newest_job < seen_newest_job
    return seen_status in FINISHED and status not in FINISHED


def stage_status(jobs: Sequence[JobFacts]) -> str:
    """A stage's status from its jobs' latest attempts, as GitLab composes it: a job allowed to
    fail passes (with a warning), a manual job not run waits."""
    outcomes = {_outcome(job) for job in latest_attempts(jobs)}
    if not outcomes:
        return "created"
    if outcomes & ACTIVE:
        return "running" if "running" in outcomes else "pending"
    for status in ("failed", "canceled"):
        if status in outcomes:
            return status
    if outcomes <= {"success", "skipped", "manual"}:
        return "success" if "success" in outcomes else "manual" if "manual" in outcomes else "skipped"
    return "running" if "success" in outcomes else "created"


def _outcome(job: JobFacts) -> str:
    if job.allow_failure and job.status in ("failed", "canceled"):
        return "success"
    return "manual" if manual_not_run(job) else job.status


def version_to_link(*, tag: bool, ref: str, versions_of_commit: Sequence[V]) -> V | None:
    """ "A version is the record of one code commit": a branch pipeline on a commit that already has
    a version makes none and is linked to the commit's first version; a tag pipeline makes the tag's
    version (even beside the commit's branch version), unless this tag's version of it exists."""
    if tag:
        return next((version for version in versions_of_commit if version.tag and version.ref == ref), None)
    return versions_of_commit[0] if versions_of_commit else None


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
