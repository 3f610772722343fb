"""Versions and pipelines as the guide means them: "A version is the record of one code commit: each
pushed change produces a new version, but only when every stage of the service's CI pipeline
succeeded. The detail page shows the pipeline's progress and the list of versions."
"""

# ruff: noqa: F811 - the tests take the imported `uow` fixture by name
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.versioning import handlers
from services.versioning.models import Pipeline
from shared import gitlab_hook
from shared.errors import BadRequest, NotFound
from shared.events import Envelope, ServiceChanged, Topic, new_event
from tests.unit.conftest import outbox
from tests.unit.test_versioning import SERVICE_ID, announce, hook, receive, uow  # noqa: F401 - uow: the fixture

SHA_A, SHA_B = "a" * 40, "b" * 40


def job(job_id: int, name: str, status: str, stage: str = "test", **fields: object) -> dict:
    return {"id": job_id, "stage": stage, "name": name, "status": status, **fields}


def pipeline_hook(
    pipeline_id: int, status: str, jobs: list[dict], *, sha: str = SHA_A, ref: str = "main", tag: bool = False, **attrs
) -> dict:
    body = hook(pipeline_id=pipeline_id, status=status, ref=ref, tag=tag)
    body["object_attributes"] |= {"sha": sha, **attrs}
    body["builds"] = jobs
    return body


def passing(*, first: int = 1) -> list[dict]:
    return [job(first, "compile", "success", stage="build"), job(first + 1, "unit", "success")]


async def make_versions(uow) -> list[str]:
    """versioning's own pipeline.succeeded events, applied (each once: the inbox says which were)."""
    for row in await outbox(uow, "pipeline.succeeded"):
        await handlers.on_pipeline_succeeded(Envelope.model_validate_json(row.payload), uow=uow, registry="reg")
    return [version.name for version in await handlers.list_versions("shop", "web", uow=uow)]


async def the_pipeline(uow, pipeline_id: int) -> Pipeline:
    return next(p for p in await handlers.list_pipelines("shop", "web", uow=uow) if p.pipeline_id == pipeline_id)


async def test_a_second_branch_pipeline_on_a_commit_is_linked_to_its_version(uow):
    # "A version is the record of one code commit": the same commit twice makes one version.
    await receive(uow, pipeline_hook(1, "success", passing()), delivery="d-1")
    await receive(uow, pipeline_hook(2, "success", passing(first=3)), delivery="d-2")
    [name] = await make_versions(uow)
    first, second = await the_pipeline(uow, 1), await the_pipeline(uow, 2)
    assert (first.version, first.version_made) == (name, True)
    assert (second.version, second.version_made) == (name, False), "linked to the version its commit has"
    assert len(await outbox(uow, "version.created")) == 1
    await receive(uow, pipeline_hook(3, "success", passing(first=5), sha=SHA_B), delivery="d-3")
    assert len(await make_versions(uow)) == 2, "another commit: another version"


async def test_a_tag_pipeline_makes_the_tags_version_on_a_commit_that_has_one(uow):
    await receive(uow, pipeline_hook(1, "success", passing()), delivery="d-1")
    await receive(uow, pipeline_hook(2, "success", passing(first=3), ref="v1.2.0", tag=True), delivery="d-2")
    names = await make_versions(uow)
    assert "v1.2.0" in names and len(names) == 2
    assert (await the_pipeline(uow, 2)).version_made is True
    # the same tag's pipeline run again on the same commit: the tag's version, not a new one
    await receive(uow, pipeline_hook(4, "success", passing(first=5), ref="v1.2.0", tag=True), delivery="d-4")
    assert len(await make_versions(uow)) == 2
    assert ((await the_pipeline(uow, 4)).version, (await the_pipeline(uow, 4)).version_made) == ("v1.2.0", False)
    # a branch pipeline on that commit is linked to the commit's first version
    await receive(uow, pipeline_hook(5, "success", passing(first=7), ref="develop"), delivery="d-5")
    assert len(await make_versions(uow)) == 2
    assert (await the_pipeline(uow, 5)).version == (await the_pipeline(uow, 1)).version


async def test_each_job_is_judged_by_its_latest_attempt(uow):
    # GitLab's own example pairs status "success" with a failed build: the latest attempt counts.
    retried_to_success = [job(1, "unit", "failed"), job(3, "unit", "success"), job(2, "lint", "success")]
    assert await receive(uow, pipeline_hook(1, "success", retried_to_success), delivery="d-1") is True
    retried_to_failure = [job(11, "unit", "success"), job(14, "unit", "failed"), job(12, "lint", "success")]
    assert await receive(uow, pipeline_hook(2, "success", retried_to_failure, sha=SHA_B), delivery="d-2") is False
    refused = await the_pipeline(uow, 2)
    assert refused.status == "success" and not refused.succeeded and refused.version is None
    assert "'unit'" in refused.no_version_reason and "failed" in refused.no_version_reason
    assert "14" in refused.no_version_reason, "names the attempt that counts"
    # retried once more and passing: GitLab's next hook makes the version, and the reason goes
    passing_now = [*retried_to_failure, job(15, "unit", "success")]
    assert await receive(uow, pipeline_hook(2, "success", passing_now, sha=SHA_B), delivery="d-3") is True
    assert (await the_pipeline(uow, 2)).no_version_reason is None
    assert len(await make_versions(uow)) == 2


@pytest.mark.parametrize(
    ("jobs", "makes_version"),
    [
        ([job(1, "unit", "success"), job(2, "audit", "failed", allow_failure=True)], True),
        ([job(1, "unit", "success"), job(2, "deploy", "manual", stage="deploy", when="manual", manual=True)], True),
        ([job(1, "unit", "success"), job(2, "notify", "skipped", stage="deploy", when="on_failure")], True),
        ([job(1, "unit", "success"), job(2, "deploy", "failed", stage="deploy", when="manual", manual=True)], False),
        ([job(1, "unit", "canceled"), job(2, "lint", "success")], False),
    ],
    ids=["allowed-to-fail", "manual-not-run", "skipped-by-rule", "manual-played-and-failed", "canceled"],
)
async def test_jobs_allowed_to_fail_and_manual_jobs_not_run_fail_no_stage(uow, jobs, makes_version):
    assert await receive(uow, pipeline_hook(1, "success", jobs)) is makes_version
    assert ((await the_pipeline(uow, 1)).no_version_reason is None) is makes_version


async def test_a_finished_pipeline_never_goes_back_to_running(uow):
    jobs = [job(1, "compile", "success", stage="build"), job(2, "unit", "success")]
    await receive(uow, pipeline_hook(1, "success", jobs), delivery="d-ok")
    late = [job(1, "compile", "success", stage="build"), job(2, "unit", "running")]
    assert await receive(uow, pipeline_hook(1, "running", late), delivery="d-late") is False
    pipeline = await the_pipeline(uow, 1)
    assert (pipeline.status, pipeline.succeeded) == ("success", True)
    [view] = await handlers.show_pipelines([pipeline], uow=uow)
    assert [(stage.name, stage.status) for stage in view.stages] == [("build", "success"), ("test", "success")]


async def test_a_retry_is_not_mistaken_for_an_older_hook(uow):
    # failed → running (a new attempt: job 3) → success; and the first failure delivered last changes nothing
    failed = [job(1, "compile", "success", stage="build"), job(2, "unit", "failed")]
    retrying = [*failed, job(3, "unit", "running")]
    await receive(uow, pipeline_hook(1, "failed", failed), delivery="d-failed")
    await receive(uow, pipeline_hook(1, "running", retrying), delivery="d-retry")
    assert (await the_pipeline(uow, 1)).status == "running", "the retry's new attempt is newer than the failure"
    done = [*failed, job(3, "unit", "success")]
    assert await receive(uow, pipeline_hook(1, "success", done), delivery="d-done") is True
    assert await receive(uow, pipeline_hook(1, "failed", failed), delivery="d-failed-again") is False
    pipeline = await the_pipeline(uow, 1)
    [view] = await handlers.show_pipelines([pipeline], uow=uow)
    assert pipeline.status == "success" and view.stages[1].status == "success"
    assert [(j.job_id, j.status, j.latest) for j in view.stages[1].jobs] == [(2, "failed", False), (3, "success", True)]


async def test_stages_show_their_jobs_progress(uow):
    jobs = [
        job(1, "compile", "success", stage="build", started_at="2026-03-10 08:00:00 UTC"),
        job(2, "unit", "running", started_at="2026-03-10T08:01:00Z"),
        job(3, "lint", "pending"),
    ]
    await receive(uow, pipeline_hook(1, "running", jobs, created_at="2026-03-10 07:59:59 UTC"))
    [view] = await handlers.show_pipelines([await the_pipeline(uow, 1)], uow=uow)
    assert [(s.name, s.status) for s in view.stages] == [("build", "success"), ("test", "running")]
    assert view.stages[1].jobs[0].started_at == datetime(2026, 3, 10, 8, 1, tzinfo=UTC)
    assert view.created_at == datetime(2026, 3, 10, 7, 59, 59, tzinfo=UTC) and view.finished_at is None


@pytest.mark.parametrize(
    "stamp",
    ["2016-08-12 15:23:28 UTC", "2016-08-12T15:23:28Z", "2016-08-12T15:23:28.000Z", "2016-08-12T17:23:28+02:00"],
)
def test_gitlab_times_parse_in_every_format_in_use(stamp):
    assert gitlab_hook.parse_time(stamp) == datetime(2016, 8, 12, 15, 23, 28, tzinfo=UTC)


def test_a_time_iso_8601_does_not_spell_still_parses():
    # strptime reads single-digit fields; ISO 8601 (read first, it is 30 times faster) does not
    assert gitlab_hook.parse_time("2016-8-12 5:23:28 UTC") == datetime(2016, 8, 12, 5, 23, 28, tzinfo=UTC)


def test_unreadable_times_are_shown_as_unknown():
    assert gitlab_hook.parse_time("yesterday") is None and gitlab_hook.parse_time(None) is None


async def test_an_older_senders_hook_parses_jobs_iso_times_and_extra_keys(uow):
    # gitlab4j-api's fixtures: "jobs" for "builds", ISO 8601 times; a merge-request and a downstream pipeline
    body = pipeline_hook(1, "success", [], finished_at="2016-08-12T15:23:28Z")
    del body["builds"]
    body["jobs"] = [job(1, "unit", "failed", finished_at="2016-08-12T15:23:28Z")]
    body["object_attributes"] |= {"variables": [{"key": "A", "value": "b"}], "source": "merge_request_event"}
    body["merge_request"] = {"id": 9, "iid": 1, "title": "Login"}
    body["source_pipeline"] = {"project": {"id": 1}, "pipeline_id": 3, "job_id": 4}
    assert await receive(uow, body) is False, "the jobs were read: the failed one counts"
    pipeline = await the_pipeline(uow, 1)
    assert pipeline.finished_at == datetime(2016, 8, 12, 15, 23, 28, tzinfo=UTC)
    assert "'unit'" in pipeline.no_version_reason


async def test_a_hook_kept_for_a_service_not_announced_yet_keeps_its_jobs_and_times(uow):
    body = pipeline_hook(1, "success", [job(1, "unit", "failed", allow_failure=None, manual=None)])
    body["project"] = {"id": 77, "path_with_namespace": "acme/api"}
    body["object_attributes"]["created_at"] = "2026-03-10T08:00:00Z"
    assert await receive(uow, body) is False  # kept: no service has GitLab project 77 yet
    await announce(uow, "s2", "acme/api", "77")
    [pipeline] = await handlers.list_pipelines("shop", "api", uow=uow)
    assert "'unit'" in pipeline.no_version_reason, "the kept hook's jobs were applied"
    assert pipeline.created_at == datetime(2026, 3, 10, 8, tzinfo=UTC)


async def test_a_hook_without_jobs_is_judged_by_the_pipelines_status(uow):
    assert await receive(uow, hook()) is True  # hooks that list no jobs: GitLab's status is all there is


async def test_a_deleted_services_repository_makes_no_version(uow):
    deleted = ServiceChanged(
        service_id=SERVICE_ID, project="shop", service="web", name="Web", enabled=False, change="deleted"
    )
    await handlers.on_service_changed(
        new_event(Topic.SERVICE_CHANGED, deleted, source="t", subject="shop/web"), uow=uow
    )
    assert await receive(uow, pipeline_hook(1, "success", passing())) is False
    assert await outbox(uow, "pipeline.succeeded") == []
    with pytest.raises(NotFound, match="deleted"):
        await handlers.list_pipelines("shop", "web", uow=uow)


def test_the_door_keeps_the_jobs_of_a_hook_too_large_for_the_broker_and_drops_what_is_unread():
    body = pipeline_hook(
        1, "success", [job(n, f"unit-{n}", "success", runner={"description": "r" * 500}) for n in range(1, 40)]
    )
    body["merge_request"] = {"description": "m" * 5_000}
    kept = gitlab_hook.bounded(body, 12_000)
    assert "merge_request" not in kept and len(kept["builds"]) == 39 and "runner" not in kept["builds"][0]
    assert gitlab_hook.parse_pipeline_hook(kept).jobs[0].name == "unit-1"
    assert json.dumps(kept).count("unit-") == 39


def test_a_small_hook_is_bounded_from_its_body_without_being_written_out_to_be_measured(monkeypatch):
    document = pipeline_hook(1, "success", passing())
    body = json.dumps(document, separators=(",", ":")).encode()
    measured = gitlab_hook.bounded(document, 12 * len(body))

    def written(_document):  # type: ignore[no-untyped-def]
        raise AssertionError("a body this small needs no measuring")

    monkeypatch.setattr(gitlab_hook, "_size", written)
    assert gitlab_hook.bounded(document, 12 * len(body), body=body) == measured


@pytest.mark.parametrize(
    "body",
    [
        b'{"n":[' + b",".join([b"1e15"] * 200) + b"]}",  # each 4 bytes written as 18
        b'{"a":[' + b",".join([b"1"] * 500) + b"]}",  # each separator gains a space
        b'{"t":"\\u00e9\\/"}',  # escapes only shrink
    ],
)
def test_no_body_grows_past_what_bounded_allows_for_when_written_again(body):
    assert len(json.dumps(json.loads(body), ensure_ascii=False).encode()) <= gitlab_hook.MAX_REWRITTEN * len(body)


def test_a_body_that_grows_when_written_again_is_still_measured_and_cut():
    document = {**pipeline_hook(1, "success", passing()), "merge_request": {"weights": [1e15] * 400}}
    body = json.dumps(document, separators=(",", ":")).replace("1000000000000000.0", "1e15").encode()
    limit = 3 * len(body)  # the body fits three times over, its rewritten form not
    assert len(json.dumps(document, ensure_ascii=False)) > limit
    kept = gitlab_hook.bounded(document, limit, body=body)
    assert "merge_request" not in kept and kept["_gantry_dropped"] == ["merge_request"]


def test_a_lone_surrogate_is_refused_whatever_the_bodys_size():
    body = b'{"object_kind":"pipeline","commit":{"message":"\\ud800"}}'
    with pytest.raises(BadRequest, match="not valid Unicode"):
        gitlab_hook.bounded(json.loads(body), 1_000_000, body=body)
