"""Versioning. The guide: "each pushed change produces a new version, but only when every stage of
the service's CI pipeline succeeded"."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.versioning import domain, handlers
from services.versioning.models import KnownService, ParkedHook, Pipeline, Version
from shared.auth import webhook_secret
from shared.errors import InvalidInput, NotAuthenticated, PoisonEvent
from shared.events import PipelineSucceeded, ServiceCreated, Topic, new_event
from tests.support import SECRET
from tests.unit.conftest import outbox

SERVICE_ID = "s1"
TOKEN = webhook_secret(SECRET, SERVICE_ID)


def hook(pipeline_id=7, status="success", ref="main", tag=False):
    return {
        "object_kind": "pipeline",
        "object_attributes": {"id": pipeline_id, "ref": ref, "tag": tag, "sha": "a1b2c3d4e5f6a7b8c9d0" * 2,
                              "status": status, "stages": ["build", "test"],
                              "finished_at": "2026-03-10 08:05:09 UTC" if status == "success" else None},
        "project": {"id": 42, "path_with_namespace": "acme/web"},
        "commit": {"message": "Add login", "author": {"name": "Ada", "email": "ada@example.com"}},
    }


@pytest.fixture
async def uow(make_uow):
    uow = await make_uow("versioning", [KnownService, Pipeline, Version, ParkedHook])
    await announce(uow, SERVICE_ID, "acme/web", "42")
    return uow


async def announce(uow, service_id: str, path: str, project_id: str) -> None:
    created = ServiceCreated(service_id=service_id, project="shop", service=path.split("/")[-1], name="Web",
                             group="g", type="python-fastapi", repository_url="file:///r",
                             repository_web_url="file:///r", repository_path=path, scm_project_id=project_id)
    await handlers.on_service_created(new_event(Topic.SERVICE_CREATED, created, source="t", subject="shop/web"),
                                      uow=uow, secret=SECRET)


async def receive(uow, body, token=TOKEN, delivery="d-1"):
    return await handlers.receive_pipeline_hook(body, token=token, delivery_id=delivery, uow=uow, secret=SECRET)


async def test_only_success_announces_and_only_once(uow):
    for status in ("pending", "running"):
        assert (await receive(uow, hook(status=status))).announced is False
    assert await outbox(uow, "pipeline.succeeded") == []
    assert (await receive(uow, hook())).announced is True
    assert (await receive(uow, hook(), delivery="d-2")).announced is False, "same pipeline twice"
    [row] = await outbox(uow, "pipeline.succeeded")
    event = json.loads(row.payload)
    assert event["correlation_id"] == "d-1" and event["data"]["commit_author"] == "Ada"
    [pipeline] = await handlers.list_pipelines("shop", "web", uow=uow)
    assert pipeline.status == "success" and pipeline.stages == "build,test"


async def test_wrong_token_and_unknown_repository(uow):
    with pytest.raises(NotAuthenticated):
        await receive(uow, hook(), token="guess")
    with pytest.raises(InvalidInput, match="object_attributes"):
        await receive(uow, {"object_kind": "pipeline", "project": {"path_with_namespace": "acme/web"}})
    too_big = hook(pipeline_id=2**70)
    with pytest.raises(InvalidInput, match="object_attributes.id"):
        await receive(uow, too_big)
    long_sha = hook()
    long_sha["object_attributes"]["sha"] = "a" * 500
    with pytest.raises(InvalidInput, match="object_attributes.sha"):
        await receive(uow, long_sha)


async def test_version_from_pipeline_is_created_once(uow):
    await receive(uow, hook())
    [row] = await outbox(uow, "pipeline.succeeded")
    from shared.events import Envelope

    succeeded = Envelope.model_validate_json(row.payload)
    await handlers.on_pipeline_succeeded(succeeded, uow=uow, registry="reg.local")
    await handlers.on_pipeline_succeeded(succeeded, uow=uow, registry="reg.local")  # redelivery
    [version] = await handlers.list_versions("shop", "web", uow=uow)
    assert version.name == "2026.3.10-080509-main"
    assert version.image == "reg.local/acme/web:a1b2c3d4"
    [created] = await outbox(uow, "version.created")
    event = json.loads(created.payload)
    assert event["causation_id"] == succeeded.id and event["correlation_id"] == succeeded.correlation_id


async def test_unknown_service_is_poison(uow):
    data = PipelineSucceeded(service_id="nobody", project="p", service="s", pipeline_id=1, ref="main", sha="abc")
    with pytest.raises(PoisonEvent):
        await handlers.on_pipeline_succeeded(new_event(Topic.PIPELINE_SUCCEEDED, data, source="t", subject="p/s"),
                                             uow=uow, registry="r")


def test_version_names():
    # tag pipelines are named after the tag; others YYYY.M.D-HHMMSS-<ref-slug>
    at = datetime(2026, 3, 10, 8, 5, 9, tzinfo=UTC)
    assert domain.version_name(ref="v1.2.0", tag=True, finished_at=at, now=at) == "v1.2.0"
    assert domain.version_name(ref="feature/Login", tag=False, finished_at=at, now=at) == "2026.3.10-080509-feature-login"
    assert domain.parse_gitlab_time("2026-03-10 08:05:09 UTC") == at


async def test_same_second_on_one_ref_gets_distinct_names(uow):
    for pipeline_id in (7, 8):
        data = PipelineSucceeded(service_id=SERVICE_ID, project="shop", service="web", pipeline_id=pipeline_id,
                                 ref="main", sha="abc", finished_at=datetime(2026, 3, 10, 8, 5, 9, tzinfo=UTC))
        await handlers.on_pipeline_succeeded(new_event(Topic.PIPELINE_SUCCEEDED, data, source="t", subject="shop/web"),
                                             uow=uow, registry="r")
    names = sorted(v.name for v in await handlers.list_versions("shop", "web", uow=uow))
    assert names == ["2026.3.10-080509-main", "2026.3.10-080509-main.8"]


@pytest.mark.parametrize("status", ["failed", "canceled", "skipped", "manual", "created", "pending", "running"])
async def test_a_pipeline_that_did_not_succeed_makes_no_version(uow, status):
    receipt = await receive(uow, hook(status=status))
    assert receipt.announced is False and receipt.status == status
    assert await outbox(uow, "pipeline.succeeded") == []


async def test_a_retried_pipeline_is_announced_once_it_succeeds(uow):
    # GitLab keeps the pipeline id on retry: failed → running → success
    for status, announced in (("failed", False), ("running", False), ("success", True), ("success", False)):
        assert (await receive(uow, hook(pipeline_id=11, status=status))).announced is announced
    assert len(await outbox(uow, "pipeline.succeeded")) == 1


def hook_for(path: str, project_id: int, pipeline_id: int = 1, status: str = "success") -> dict:
    body = hook(pipeline_id=pipeline_id, status=status)
    body["project"] = {"id": project_id, "path_with_namespace": path}
    return body


async def test_a_hook_that_overtakes_its_service_is_kept_and_applied_when_it_is_announced(uow):
    token = webhook_secret(SECRET, "s2")
    for status, delivery in (("running", "d-run"), ("success", "d-ok")):
        receipt = await receive(uow, hook_for("acme/api", 77, status=status), token=token, delivery=delivery)
        assert receipt.parked and not receipt.announced
    assert await outbox(uow, "pipeline.succeeded") == []
    await announce(uow, "s2", "acme/api", "77")
    [row] = await outbox(uow, "pipeline.succeeded")
    assert json.loads(row.payload)["correlation_id"] == "d-ok" and row.key == "s2"
    [pipeline] = await handlers.list_pipelines("shop", "api", uow=uow)
    assert (pipeline.status, pipeline.succeeded) == ("success", True)


async def test_a_parked_hook_with_a_wrong_token_is_dropped(uow):
    assert (await receive(uow, hook_for("acme/api", 77), token="guess")).parked
    await announce(uow, "s2", "acme/api", "77")
    assert await outbox(uow, "pipeline.succeeded") == []
    assert await handlers.list_pipelines("shop", "api", uow=uow) == []
