"""Versioning. The guide: "each pushed change produces a new version, but only when every stage of
the service's CI pipeline succeeded"."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from types import SimpleNamespace

import pytest
from sqlalchemy import event
from sqlmodel import select

from services.versioning import app as versioning_app
from services.versioning import domain, handlers, parking
from services.versioning.models import KnownService, ParkedHook, Pipeline, PipelineJob, Version
from shared import gitlab_hook
from shared.bus import FOLDED, folded, with_prefetch
from shared.consume import handle_batch
from shared.errors import PoisonEvent
from shared.events import Envelope, HookReceived, PipelineSucceeded, ServiceCreated, Topic, new_event
from shared.outbox import InboxEntry, UnitOfWork
from tests.unit.conftest import outbox, query_plan, reads_of
from tests.unit.test_shared import FakeDeadLetters

SERVICE_ID = "s1"


def hook(pipeline_id=7, status="success", ref="main", tag=False):
    return {
        "object_kind": "pipeline",
        "object_attributes": {
            "id": pipeline_id,
            "ref": ref,
            "tag": tag,
            "sha": "a1b2c3d4e5f6a7b8c9d0" * 2,
            "status": status,
            "stages": ["build", "test"],
            "finished_at": "2026-03-10 08:05:09 UTC" if status == "success" else None,
        },
        "project": {"id": 42, "path_with_namespace": "acme/web"},
        "commit": {"message": "Add login", "author": {"name": "Ada", "email": "ada@example.com"}},
    }


@pytest.fixture
async def uow(make_uow):
    uow = await make_uow("versioning", [KnownService, Pipeline, PipelineJob, Version, ParkedHook])
    await announce(uow, SERVICE_ID, "acme/web", "42")
    return uow


async def announce(uow, service_id: str, path: str, project_id: str) -> None:
    created = ServiceCreated(
        service_id=service_id,
        project="shop",
        service=path.split("/")[-1],
        name="Web",
        group="g",
        type="python-fastapi",
        repository_url="file:///r",
        repository_web_url="file:///r",
        repository_path=path,
        scm_project_id=project_id,
    )
    await handlers.on_service_created(
        new_event(Topic.SERVICE_CREATED, created, source="t", subject="shop/web"), uow=uow
    )


def hook_event(body: dict, delivery: str = "d-1", event: str = "Pipeline Hook") -> Envelope:
    """What the webhook door publishes for a checked hook: its delivery id is the event id."""
    data = HookReceived(
        scm_project_id=str(body.get("project", {}).get("id")), event=event, delivery_id=delivery, hook=body
    )
    return Envelope(
        id=delivery,
        type=Topic.HOOK_RECEIVED.value,
        source="gantry/gateway",
        subject="acme/web",
        correlation_id=delivery,
        data=data.model_dump(mode="json"),
    )


async def receive(uow, body, delivery="d-1") -> bool:
    """Apply a hook from the bus; True when it announced a pipeline's success."""
    before = len(await outbox(uow, "pipeline.succeeded"))
    await handlers.on_hook_received(hook_event(body, delivery), uow=uow)
    return len(await outbox(uow, "pipeline.succeeded")) > before


async def test_only_success_announces_and_only_once(uow):
    for status in ("pending", "running"):
        assert await receive(uow, hook(status=status), delivery=f"d-{status}") is False
    assert await outbox(uow, "pipeline.succeeded") == []
    assert await receive(uow, hook()) is True
    assert await receive(uow, hook(), delivery="d-2") is False, "same pipeline twice"
    [row] = await outbox(uow, "pipeline.succeeded")
    event = json.loads(row.payload)
    assert event["correlation_id"] == "d-1" and event["data"]["commit_author"] == "Ada"
    [pipeline] = await handlers.list_pipelines("shop", "web", uow=uow)
    assert pipeline.status == "success" and pipeline.stages == "build,test"


async def test_a_redelivered_hook_is_applied_once(uow):
    await receive(uow, hook(status="running"), delivery="d-run")
    await receive(uow, hook(), delivery="d-ok")
    assert await receive(uow, hook(status="running"), delivery="d-run") is False
    [pipeline] = await handlers.list_pipelines("shop", "web", uow=uow)
    assert pipeline.status == "success", "the redelivered 'running' did not overwrite the later success"


async def test_a_hook_that_does_not_fit_is_poison(uow):
    with pytest.raises(PoisonEvent, match="object_attributes"):
        await receive(uow, {"object_kind": "pipeline", "project": {"id": 42, "path_with_namespace": "acme/web"}})
    too_big = hook(pipeline_id=2**70)
    with pytest.raises(PoisonEvent, match="object_attributes.id"):
        await receive(uow, too_big)
    long_sha = hook()
    long_sha["object_attributes"]["sha"] = "a" * 500
    with pytest.raises(PoisonEvent, match="object_attributes.sha"):
        await receive(uow, long_sha)
    assert await handlers.list_pipelines("shop", "web", uow=uow) == []


async def test_the_hook_is_applied_to_the_service_of_its_gitlab_project_alone(uow):
    # The token was checked against project.id: a path naming another repository changes nothing.
    await announce(uow, "s2", "acme/api", "77")
    body = hook()
    body["project"] = {"id": 77, "path_with_namespace": "acme/web"}
    assert await receive(uow, body) is True
    assert await handlers.list_pipelines("shop", "web", uow=uow) == []
    [pipeline] = await handlers.list_pipelines("shop", "api", uow=uow)
    assert pipeline.pipeline_id == 7


async def test_version_from_pipeline_is_created_once(uow):
    await receive(uow, hook())
    [row] = await outbox(uow, "pipeline.succeeded")
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
        await handlers.on_pipeline_succeeded(
            new_event(Topic.PIPELINE_SUCCEEDED, data, source="t", subject="p/s"), uow=uow, registry="r"
        )


def test_version_names():
    # The guide: "Version name: the tag for tag pipelines, else YYYY.M.D-HHMMSS-<ref-slug>".
    at = datetime(2026, 3, 10, 8, 5, 9, tzinfo=UTC)
    assert domain.version_name(ref="v1.2.0", tag=True, finished_at=at, now=at) == "v1.2.0"
    assert (
        domain.version_name(ref="feature/Login", tag=False, finished_at=at, now=at) == "2026.3.10-080509-feature-login"
    )
    assert gitlab_hook.parse_time("2026-03-10 08:05:09 UTC") == at


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("v1/../../x", "v1-..-..-x"),
        ("../etc", "etc"),
        ("release 2.0:final", "release-2.0-final"),
        ("V_1.0-rc.1", "V_1.0-rc.1"),
        ("x" * 300, "x" * 128),
    ],
)
def test_version_names_and_image_tags_follow_the_registry_tag_grammar(ref, name):
    # A version's name is its image's tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; the version keeps the ref.
    at = datetime(2026, 3, 10, 8, 5, 9, tzinfo=UTC)
    assert domain.version_name(ref=ref, tag=True, finished_at=at, now=at) == name
    assert domain.image_reference("reg", "acme/web", ref=ref, tag=True, sha="abc").endswith(f":{name}")
    branch = domain.version_name(ref="feature/" + "y" * 300, tag=False, finished_at=at, now=at)
    assert domain.TAG_GRAMMAR.match(branch) and domain.TAG_GRAMMAR.match(domain.with_pipeline(branch, 2**63 - 1))


def test_a_tag_with_no_usable_character_gets_a_stable_name():
    at = datetime(2026, 3, 10, 8, 5, 9, tzinfo=UTC)
    name = domain.version_name(ref="版本", tag=True, finished_at=at, now=at)
    assert domain.TAG_GRAMMAR.match(name) and name == domain.version_name(ref="版本", tag=True, finished_at=at, now=at)


async def test_a_tag_pipeline_keeps_its_ref_beside_the_sanitized_name(uow):
    await receive(uow, hook(ref="v1/../../x", tag=True))
    [row] = await outbox(uow, "pipeline.succeeded")
    await handlers.on_pipeline_succeeded(Envelope.model_validate_json(row.payload), uow=uow, registry="reg.local")
    [version] = await handlers.list_versions("shop", "web", uow=uow)
    assert (version.name, version.ref) == ("v1-..-..-x", "v1/../../x")
    assert version.image == "reg.local/acme/web:v1-..-..-x"
    # release's auto-release tells tag versions from branch versions by this flag
    [created] = await outbox(uow, "version.created")
    assert json.loads(created.payload)["data"]["tag"] is True


def succeeded(pipeline_id: int, sha: str, finished_at: datetime | None = None) -> Envelope:
    data = PipelineSucceeded(
        service_id=SERVICE_ID,
        project="shop",
        service="web",
        pipeline_id=pipeline_id,
        ref="main",
        sha=sha,
        finished_at=finished_at,
    )
    return new_event(Topic.PIPELINE_SUCCEEDED, data, source="t", subject="shop/web")


async def test_same_second_on_one_ref_gets_distinct_names(uow):
    same_second = datetime(2026, 3, 10, 8, 5, 9, tzinfo=UTC)
    for pipeline_id in (7, 8):  # two commits: one commit would make one version
        await handlers.on_pipeline_succeeded(
            succeeded(pipeline_id, sha=f"abc{pipeline_id}", finished_at=same_second), uow=uow, registry="r"
        )
    names = sorted(v.name for v in await handlers.list_versions("shop", "web", uow=uow))
    assert names == ["2026.3.10-080509-main", "2026.3.10-080509-main.8"]


@pytest.mark.parametrize("status", ["failed", "canceled", "skipped", "manual", "created", "pending", "running"])
async def test_a_pipeline_that_did_not_succeed_makes_no_version(uow, status):
    assert await receive(uow, hook(status=status)) is False
    [pipeline] = await handlers.list_pipelines("shop", "web", uow=uow)
    assert pipeline.status == status
    assert await outbox(uow, "pipeline.succeeded") == []


async def test_a_retried_pipeline_is_announced_once_it_succeeds(uow):
    # GitLab keeps the pipeline id on retry: failed → running → success
    steps = (("failed", False), ("running", False), ("success", True), ("success", False))
    for number, (status, announced) in enumerate(steps):
        assert await receive(uow, hook(pipeline_id=11, status=status), delivery=f"d-{number}") is announced
    assert len(await outbox(uow, "pipeline.succeeded")) == 1


def hook_for(path: str, project_id: int, pipeline_id: int = 1, status: str = "success") -> dict:
    body = hook(pipeline_id=pipeline_id, status=status)
    body["project"] = {"id": project_id, "path_with_namespace": path}
    return body


async def test_a_hook_that_overtakes_its_service_is_kept_and_applied_when_it_is_announced(uow):
    for status, delivery in (("running", "d-run"), ("success", "d-ok")):
        assert await receive(uow, hook_for("acme/api", 77, status=status), delivery=delivery) is False
    assert await outbox(uow, "pipeline.succeeded") == []
    await announce(uow, "s2", "acme/api", "77")
    [row] = await outbox(uow, "pipeline.succeeded")
    assert json.loads(row.payload)["correlation_id"] == "d-ok" and row.key == "s2"
    [pipeline] = await handlers.list_pipelines("shop", "api", uow=uow)
    assert (pipeline.status, pipeline.succeeded) == ("success", True)


async def test_kept_hooks_are_bounded_and_the_one_past_the_bound_is_poison(uow, monkeypatch):
    monkeypatch.setattr(parking, "MAX_PARKED", 2)
    for pipeline_id in (1, 2):
        await receive(uow, hook_for("acme/api", 77, pipeline_id=pipeline_id), delivery=f"d-{pipeline_id}")
    with pytest.raises(PoisonEvent, match="2 hooks already wait"):
        await receive(uow, hook_for("acme/api", 77, pipeline_id=3), delivery="d-3")
    await announce(uow, "s2", "acme/api", "77")
    assert len(await handlers.list_pipelines("shop", "api", uow=uow)) == 2


async def test_a_successful_pipeline_reads_its_services_versions_once_through_indexes(uow):
    # each pipeline of a busy service reads its versions: that read must not grow with them
    for pipeline_id in range(1, 41):
        await handlers.on_pipeline_succeeded(succeeded(pipeline_id, sha=f"c{pipeline_id}"), uow=uow, registry="r")
    with reads_of(uow, "versions") as reads:
        await handlers.on_pipeline_succeeded(succeeded(41, sha="c41"), uow=uow, registry="r")

    assert len(reads) == 1, "one read of the versions: of its pipeline, of its commit, of its name"
    [(statement, parameters)] = reads
    steps = await query_plan(uow, statement, parameters)
    assert "SCAN versions" not in steps and "(service_id=? AND sha=?)" in steps, steps
    assert len(await handlers.list_versions("shop", "web", uow=uow)) == 41


async def test_a_batch_of_hooks_reads_its_services_and_pipelines_once(uow):
    await announce(uow, "s2", "acme/api", "43")
    api = {**hook(pipeline_id=9), "project": {"id": 43, "path_with_namespace": "acme/api"}}
    bodies = [
        hook(status="running"),
        hook(),
        api,
        hook(pipeline_id=8),
        hook(),
        {**hook(), "project": {"id": 99, "path_with_namespace": "acme/new"}},
    ]
    events = [hook_event(body, delivery=f"d-{n}") for n, body in enumerate(bodies)]
    records = [(event.data["scm_project_id"].encode(), event.model_dump_json().encode()) for event in events]
    handler = with_prefetch(handlers.prefetch_hooks, partial(handlers.on_hook_received, uow=uow))

    with reads_of(uow, "versioning_services") as services, reads_of(uow, "pipelines") as pipelines:
        await handle_batch("gitlab.hook.received", records, handler, FakeDeadLetters(), uow)

    assert len(services) == 1 and len(pipelines) == 1, "one read each for the batch, none per hook"
    # the same as one hook at a time: pipeline 7 ran, then succeeded once (the second success is
    # the same pipeline's), and the hook of an unknown repository is kept for its service
    announced = [json.loads(row.payload)["data"] for row in await outbox(uow, "pipeline.succeeded")]
    assert sorted((data["service_id"], data["pipeline_id"]) for data in announced) == [("s1", 7), ("s1", 8), ("s2", 9)]
    assert [p.status for p in await handlers.list_pipelines("shop", "web", uow=uow)] == ["success", "success"]
    async with uow.sessions() as session:
        assert [row.scm_project_id for row in (await session.exec(select(ParkedHook))).all()] == ["99"]


async def test_a_batch_of_successes_makes_each_commits_version_once_in_one_insert(uow):
    same_second = datetime(2026, 3, 10, 8, 5, 9, tzinfo=UTC)
    events = [
        succeeded(7, sha="abc7", finished_at=same_second),
        succeeded(8, sha="abc7", finished_at=same_second),  # the same commit: linked to 7's version
        succeeded(9, sha="abc9", finished_at=same_second),  # another commit, the same second: named apart
        succeeded(7, sha="abc7", finished_at=same_second),  # pipeline 7 again (another event): nothing new
    ]
    records = [(event.data["service_id"].encode(), event.model_dump_json().encode()) for event in events]
    handler = with_prefetch(handlers.prefetch_successes, partial(handlers.on_pipeline_succeeded, uow=uow, registry="r"))
    inserts: list[str] = []
    engine = uow.sessions.kw["bind"].sync_engine
    listener = lambda _c, _cur, statement, *_rest: inserts.append(statement)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        with reads_of(uow, "versions") as reads:
            await handle_batch("pipeline.succeeded", records, handler, FakeDeadLetters(), uow)
    finally:
        event.remove(engine, "before_cursor_execute", listener)

    assert len(reads) == 1, "the batch's versions read once, ahead, none per success"
    names = sorted(v.name for v in await handlers.list_versions("shop", "web", uow=uow))
    assert names == ["2026.3.10-080509-main", "2026.3.10-080509-main.9"], "the versions the batch made were seen"
    assert len(await outbox(uow, "version.created")) == 2
    assert len([s for s in inserts if s.startswith("INSERT INTO versions")]) == 1, "the batch's versions in one INSERT"


async def test_a_batch_of_successes_finds_the_versions_made_before_it_without_a_read_each(uow):
    earlier = datetime(2026, 3, 10, 8, 5, 9, tzinfo=UTC)
    await handlers.on_pipeline_succeeded(succeeded(7, sha="abc7", finished_at=earlier), uow=uow, registry="r")
    later = datetime(2026, 3, 11, 9, 0, 0, tzinfo=UTC)
    events = [
        succeeded(10, sha="abc7", finished_at=later),  # the earlier version's commit: linked to it
        succeeded(7, sha="abc7", finished_at=later),  # pipeline 7 again: nothing new
        succeeded(11, sha="abc11", finished_at=earlier),  # the earlier version's name: named apart
        succeeded(12, sha="abc12"),  # no time of its own: named when its event was made
    ]
    made_at = datetime(2026, 3, 12, 10, 0, 1, tzinfo=UTC)  # a second long gone when it is handled
    events[-1] = events[-1].model_copy(update={"time": made_at})
    records = [(event.data["service_id"].encode(), event.model_dump_json().encode()) for event in events]
    handler = with_prefetch(handlers.prefetch_successes, partial(handlers.on_pipeline_succeeded, uow=uow, registry="r"))
    with reads_of(uow, "versions") as reads:
        await handle_batch("pipeline.succeeded", records, handler, FakeDeadLetters(), uow)

    assert len(reads) == 1, "read once ahead, the success without a time of its own too"
    versions = {v.pipeline_id: v for v in await handlers.list_versions("shop", "web", uow=uow)}
    assert sorted(versions) == [7, 11, 12]
    assert versions[11].name == "2026.3.10-080509-main.11", "pipeline 10 made none: its commit had one"
    assert versions[12].name == "2026.3.12-100001-main", "named by its event's time, not by when it was handled"
    assert len(await outbox(uow, "version.created")) == 3


# ADR 3: the success a batch of hooks announces makes its version in that batch (``bus.folded``),
# as versioning's app registers it; the event is still published, and its copy from the topic is skipped.


def folding(uow, successes=None):
    """Versioning's two handlers of the chain, with successes folded into the batch of hooks."""
    if successes is None:
        successes = partial(handlers.on_pipeline_succeeded, uow=uow, registry="r")
    successes = folded(with_prefetch(handlers.prefetch_successes, successes))
    uow.fold(Topic.PIPELINE_SUCCEEDED, successes)
    return with_prefetch(handlers.prefetch_hooks, partial(handlers.on_hook_received, uow=uow)), successes


def hook_records(*bodies):
    events = [hook_event(body, delivery=f"d-{n}") for n, body in enumerate(bodies)]
    return [(event.data["scm_project_id"].encode(), event.model_dump_json().encode()) for event in events]


def commit_hook(pipeline_id: int, sha: str, status: str = "success"):
    body = hook(pipeline_id=pipeline_id, status=status)
    body["object_attributes"]["sha"] = sha
    return body


async def copies_of_successes(uow):
    """The records the relay publishes for the announced successes, as the topic delivers them."""
    rows = await outbox(uow, "pipeline.succeeded")
    return [(row.key.encode(), row.payload.encode()) for row in rows]


def test_versioning_folds_the_successes_it_announces():
    subscriptions = versioning_app._subscriptions(
        SimpleNamespace(uow=None, settings=SimpleNamespace(image_registry="r"))
    )
    assert getattr(subscriptions[Topic.PIPELINE_SUCCEEDED], FOLDED, False) is True
    assert not getattr(subscriptions[Topic.HOOK_RECEIVED], FOLDED, False), "the door's hooks still go round"


async def test_a_batch_of_hooks_makes_the_versions_of_the_successes_it_announces(uow):
    hooks, _successes = folding(uow)
    records = hook_records(commit_hook(7, "c7", status="running"), commit_hook(7, "c7"), commit_hook(8, "c8"))
    with reads_of(uow, "versions") as reads:
        await handle_batch("gitlab.hook.received", records, hooks, FakeDeadLetters(), uow)

    assert len(reads) == 1, "the successes' versions read once, ahead, as their own batch would"
    announced = await outbox(uow, "pipeline.succeeded")
    assert len(announced) == 2, "the successes are still published, for every other reader"
    versions = {v.pipeline_id: v for v in await handlers.list_versions("shop", "web", uow=uow)}
    assert sorted(versions) == [7, 8]
    created = [json.loads(row.payload) for row in await outbox(uow, "version.created")]
    assert [event["causation_id"] for event in created] == [json.loads(row.payload)["id"] for row in announced]
    assert [p.version for p in await handlers.list_pipelines("shop", "web", uow=uow)] == [
        versions[8].name,
        versions[7].name,
    ]
    async with uow.sessions() as session:
        applied = set((await session.exec(select(InboxEntry.event_id))).all())
    assert {json.loads(row.payload)["id"] for row in announced} <= applied, "claimed in the same transaction"


async def test_the_successes_folded_into_a_batch_of_hooks_read_no_service_or_pipeline_again(uow):
    hooks, _successes = folding(uow)
    records = hook_records(commit_hook(7, "c7", status="running"), commit_hook(7, "c7"), commit_hook(8, "c8"))
    with reads_of(uow, "versioning_services") as services, reads_of(uow, "pipelines") as pipelines:
        await handle_batch("gitlab.hook.received", records, hooks, FakeDeadLetters(), uow)

    # the hooks' read ahead read both; the successes they announce name the same rows
    assert len(services) == 1 and len(pipelines) == 1, (services, pipelines)
    versions = {v.pipeline_id: v.name for v in await handlers.list_versions("shop", "web", uow=uow)}
    assert sorted(versions) == [7, 8]
    linked = {p.pipeline_id: p.version for p in await handlers.list_pipelines("shop", "web", uow=uow)}
    assert linked == versions, "each success found its pipeline, as its own batch would"


async def test_the_copy_of_a_success_applied_in_its_batch_opens_no_transaction(uow):
    hooks, successes = folding(uow)
    await handle_batch("gitlab.hook.received", hook_records(commit_hook(7, "c7")), hooks, FakeDeadLetters(), uow)
    copies = await copies_of_successes(uow)
    statements: list[str] = []
    engine = uow.sessions.kw["bind"].sync_engine
    listener = lambda _c, _cur, statement, *_rest: statements.append(statement)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        await handle_batch("pipeline.succeeded", copies, successes, FakeDeadLetters(), uow)
    finally:
        event.remove(engine, "before_cursor_execute", listener)

    assert statements == [], "skipped: this process applied it in the batch that emitted it"
    assert len(await handlers.list_versions("shop", "web", uow=uow)) == 1
    assert len(await outbox(uow, "version.created")) == 1


async def test_after_a_restart_the_copy_of_a_folded_success_is_found_in_the_inbox(uow):
    hooks, _successes = folding(uow)
    await handle_batch("gitlab.hook.received", hook_records(commit_hook(7, "c7")), hooks, FakeDeadLetters(), uow)
    restarted = UnitOfWork(uow.sessions, source=uow.source)  # nothing remembered of what it applied
    _hooks, successes = folding(restarted)
    dead = FakeDeadLetters()
    await handle_batch("pipeline.succeeded", await copies_of_successes(uow), successes, dead, restarted)

    assert len(await handlers.list_versions("shop", "web", uow=uow)) == 1, "not made twice"
    assert len(await outbox(uow, "version.created")) == 1 and dead.records == []


async def test_a_success_that_fails_in_the_batch_of_its_hook_is_left_to_its_topic(uow):
    async def failing(envelope):
        raise RuntimeError("the versions table is having a bad day")

    hooks, _failing = folding(uow, failing)
    dead = FakeDeadLetters()
    await handle_batch("gitlab.hook.received", hook_records(commit_hook(7, "c7")), hooks, dead, uow)

    assert dead.records == [], "the hook itself was applied"
    [pipeline] = await handlers.list_pipelines("shop", "web", uow=uow)
    assert pipeline.succeeded and pipeline.version is None
    assert len(await outbox(uow, "pipeline.succeeded")) == 1 and await outbox(uow, "version.created") == []

    _hooks, successes = folding(uow)  # the copy from the topic, with versioning's own handler
    await handle_batch("pipeline.succeeded", await copies_of_successes(uow), successes, dead, uow)
    [version] = await handlers.list_versions("shop", "web", uow=uow)
    assert version.pipeline_id == 7 and dead.records == []
    assert len(await outbox(uow, "version.created")) == 1
