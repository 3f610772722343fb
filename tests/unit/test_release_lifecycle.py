"""Release's lifecycle against a real SQLite file: branches, disabled and deleted services, where a
service runs, un-release, and environments changed and deleted (each announced through the outbox)."""

from __future__ import annotations

import json
from functools import partial

import pytest
from sqlmodel import select

from services.release import environments, handlers, lifecycle
from services.release.models import Environment, EnvironmentCreate, EnvironmentUpdate, KnownVersion, Release, Running
from shared.bus import with_prefetch
from shared.consume import handle_batch
from shared.errors import Conflict, NotFound
from shared.events import DeployStatus, Envelope, ServiceChanged, Topic, new_event
from shared.outbox import UnitOfWork
from tests.unit.conftest import outbox, reads_of
from tests.unit.test_release_handlers import (
    PROJECT,
    add_environments,
    known_service,
    released_events,
    service_created,
    uow,  # noqa: F401 - the fixture
    version_created,
)
from tests.unit.test_shared import FakeDeadLetters


def service_changed(service: Envelope, change: str, *, enabled: bool = True) -> Envelope:
    data = ServiceChanged(
        service_id=service.data["service_id"],
        project=PROJECT,
        service=service.data["service"],
        name="Renamed" if change == "updated" else service.data["name"],
        enabled=enabled,
        change=change,  # type: ignore[arg-type]
    )
    return new_event(Topic.SERVICE_CHANGED, data, source="gantry/catalog", subject=service.subject)


def deploy_status(service: Envelope, environment: str, state: str, *, track: str = "stable") -> Envelope:
    data = DeployStatus(
        service_id=service.data["service_id"],
        project=PROJECT,
        service=service.data["service"],
        deployment_id="d-1",
        environment=environment,
        version="1.0.0",
        track=track,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        desired=1,
    )
    return new_event(Topic.DEPLOY_STATUS, data, source="gantry/deploy", subject=service.subject)


async def payloads(uow: UnitOfWork, topic: Topic) -> list[dict]:  # noqa: F811
    return [json.loads(row.payload)["data"] for row in await outbox(uow, topic.value)]


async def test_auto_release_takes_only_versions_from_matching_refs(uow):  # noqa: F811
    await add_environments(uow, "staging")
    announced = await known_service(uow, "staging", auto=True)  # refs: the default branch, main
    code = announced.data["service"]

    await handlers.on_version_created(version_created(announced, "f-1", ref="feature/login"), uow=uow)
    await handlers.on_version_created(version_created(announced, "m-1"), uow=uow)
    await handlers.on_version_created(version_created(announced, "v1.0", ref="v1.0", tag=True), uow=uow)
    assert [p["data"]["version"] for _, p in await released_events(uow)] == ["m-1"]

    settings = await handlers.set_auto_release(PROJECT, code, True, refs=["release/*"], tags=True, uow=uow)
    assert (settings.auto_release_refs, settings.auto_release_tags) == (["release/*"], True)
    await handlers.on_version_created(version_created(announced, "m-2"), uow=uow)
    await handlers.on_version_created(version_created(announced, "r-1", ref="release/1.2"), uow=uow)
    await handlers.on_version_created(version_created(announced, "v2.0", ref="v2.0", tag=True), uow=uow)
    assert [p["data"]["version"] for _, p in await released_events(uow)] == ["m-1", "r-1", "v2.0"]

    back = await handlers.set_auto_release(PROJECT, code, True, uow=uow)
    assert (back.auto_release_refs, back.auto_release_tags) == (["main"], False)
    async with uow.sessions() as session:
        tags = {v.version: v.tag for v in (await session.exec(select(KnownVersion))).all()}
    assert tags["v2.0"] is True and tags["r-1"] is False


async def test_a_new_environment_gets_the_newest_matching_version_and_says_so(uow):  # noqa: F811
    await add_environments(uow, "staging", "prod")
    announced = await known_service(uow)
    code = announced.data["service"]
    for version, ref in (("m-1", "main"), ("f-1", "feature/x")):
        await handlers.on_version_created(version_created(announced, version, ref=ref), uow=uow)

    target = await handlers.release_service(PROJECT, code, "staging", by="alice", correlation_id="r", uow=uow)
    assert target.latest is not None and target.latest.version == "m-1"
    assert target.version_choice == "version 'm-1' goes there: the newest from a branch matching main"

    await handlers.set_auto_release(PROJECT, code, False, refs=["release/*"], uow=uow)
    empty = await handlers.release_service(PROJECT, code, "prod", by="alice", correlation_id="r", uow=uow)
    assert empty.latest is None
    assert "none of the 2 versions is from a branch matching release/*" in empty.version_choice
    assert [p["data"]["environment"] for _, p in await released_events(uow)] == ["staging"]


async def test_a_disabled_service_is_not_released_until_enabled(uow):  # noqa: F811
    await add_environments(uow, "staging", "prod")
    announced = await known_service(uow, "staging", auto=True)
    code = announced.data["service"]
    await handlers.on_version_created(version_created(announced, "1.0.0"), uow=uow)

    await lifecycle.on_service_changed(service_changed(announced, "disabled", enabled=False), uow=uow)
    with pytest.raises(Conflict, match=f"service '{code}' is disabled: enable it with PATCH"):
        await handlers.release_service(PROJECT, code, "prod", by="a", correlation_id="r", uow=uow)
    with pytest.raises(Conflict, match="is disabled"):
        await handlers.release_version(PROJECT, code, "staging", "1.0.0", by="a", correlation_id="r", uow=uow)
    await handlers.on_version_created(version_created(announced, "1.1.0"), uow=uow)
    assert (await handlers.list_releases(PROJECT, code, uow=uow)).enabled is False

    await lifecycle.on_service_changed(service_changed(announced, "enabled"), uow=uow)
    await handlers.on_version_created(version_created(announced, "1.2.0"), uow=uow)
    await handlers.release_service(PROJECT, code, "prod", by="a", correlation_id="r", uow=uow)
    released = [(p["data"]["environment"], p["data"]["version"]) for _, p in await released_events(uow)]
    assert released == [("staging", "1.0.0"), ("staging", "1.2.0"), ("prod", "1.2.0")]  # 1.1.0 was skipped
    renamed = service_changed(announced, "updated")
    await lifecycle.on_service_changed(renamed, uow=uow)
    await lifecycle.on_service_changed(renamed, uow=uow)  # a redelivery changes nothing more
    assert (await handlers.list_releases(PROJECT, code, uow=uow)).enabled is True


async def test_unrelease_is_refused_while_the_service_runs_there(uow):  # noqa: F811
    await add_environments(uow, "staging")
    announced = await known_service(uow, "staging")
    code = announced.data["service"]
    await handlers.on_version_created(version_created(announced, "1.0.0"), uow=uow)
    await handlers.release_version(PROJECT, code, "staging", "1.0.0", by="a", correlation_id="r", uow=uow)
    withdraw = {"by": "bob", "correlation_id": "req-w", "uow": uow}

    for state in ("rendered", "failed"):
        await lifecycle.on_deploy_status(deploy_status(announced, "staging", state), uow=uow)
    await lifecycle.on_deploy_status(deploy_status(announced, "staging", "progressing", track="canary"), uow=uow)
    await lifecycle.on_deploy_status(deploy_status(announced, "staging", "removed", track="canary"), uow=uow)
    with pytest.raises(Conflict, match="runs in environment 'staging': undeploy it first"):
        await handlers.withdraw_release(PROJECT, code, "staging", **withdraw)  # stable still runs

    await lifecycle.on_deploy_status(deploy_status(announced, "staging", "removed"), uow=uow)
    await handlers.withdraw_release(PROJECT, code, "staging", **withdraw)

    [withdrawn] = await outbox(uow, Topic.RELEASE_WITHDRAWN.value)
    assert json.loads(withdrawn.payload)["correlation_id"] == "req-w"
    assert json.loads(withdrawn.payload)["data"] == {
        "service_id": announced.data["service_id"],
        "project": PROJECT,
        "service": code,
        "environment": "staging",
        "by": "bob",
    }
    assert (await handlers.list_releases(PROJECT, code, uow=uow)).environments == []
    with pytest.raises(NotFound, match="is not released to environment 'staging'"):
        await handlers.withdraw_release(PROJECT, code, "staging", **withdraw)
    again = await handlers.release_service(PROJECT, code, "staging", by="a", correlation_id="r", uow=uow)
    assert again.latest is not None and again.latest.version == "1.0.0"


async def test_a_deleted_service_is_forgotten_and_its_code_free_again(uow):  # noqa: F811
    await add_environments(uow, "staging", "prod")
    announced = await known_service(uow, "staging", "prod", auto=True)
    code = announced.data["service"]
    await handlers.on_version_created(version_created(announced, "1.0.0"), uow=uow)
    await lifecycle.on_deploy_status(deploy_status(announced, "staging", "removed"), uow=uow)

    await lifecycle.on_service_changed(service_changed(announced, "deleted", enabled=False), uow=uow)

    assert sorted(p["environment"] for p in await payloads(uow, Topic.RELEASE_WITHDRAWN)) == ["prod", "staging"]
    with pytest.raises(NotFound, match="not known to release yet"):
        await handlers.list_releases(PROJECT, code, uow=uow)
    async with uow.sessions() as session:
        assert (await session.exec(select(Release))).all() == []
    await lifecycle.on_service_created(service_created(code), uow=uow)  # the same code, a new service
    assert (await handlers.list_releases(PROJECT, code, uow=uow)).environments == []


async def test_environments_are_announced_changed_and_deleted_only_when_unused(uow):  # noqa: F811
    created = await environments.create_environment(
        EnvironmentCreate(code="staging", name="Staging", tier="staging", ingress_class="nginx"), by="root", uow=uow
    )
    assert created.announced_at is not None
    changed = await environments.update_environment(
        "staging", EnvironmentUpdate(name="Staging EU", ingress_host="staging.shop.example.com"), uow=uow
    )
    assert (changed.name, changed.ingress_class, changed.ingress_host) == (
        "Staging EU",
        "nginx",
        "staging.shop.example.com",
    )
    cleared = await environments.update_environment("staging", EnvironmentUpdate(ingress_class=None), uow=uow)
    assert (cleared.ingress_class, cleared.ingress_host) == (None, "staging.shop.example.com")

    announced = await known_service(uow, "staging")
    code = announced.data["service"]
    await lifecycle.on_deploy_status(deploy_status(announced, "staging", "succeeded"), uow=uow)
    with pytest.raises(Conflict) as refused:
        await environments.delete_environment("staging", uow=uow)
    assert f"running there: {PROJECT}/{code}" in refused.value.detail
    assert f"released to it: {PROJECT}/{code}" in refused.value.detail
    await lifecycle.on_deploy_status(deploy_status(announced, "staging", "removed"), uow=uow)
    await handlers.withdraw_release(PROJECT, code, "staging", by="a", correlation_id="r", uow=uow)
    await environments.delete_environment("staging", uow=uow)
    with pytest.raises(NotFound):
        await environments.get_environment("staging", uow=uow)

    states = await payloads(uow, Topic.ENVIRONMENT_CHANGED)
    assert [(s["change"], s["name"], s["ingress_class"], s["ingress_host"]) for s in states] == [
        ("created", "Staging", "nginx", None),
        ("updated", "Staging EU", "nginx", "staging.shop.example.com"),
        ("updated", "Staging EU", None, "staging.shop.example.com"),
        ("deleted", "Staging EU", None, "staging.shop.example.com"),
    ]
    assert all(s["namespace"] == "staging" and s["tier"] == "staging" for s in states)


async def test_environments_never_announced_are_announced_once_at_start(uow):  # noqa: F811
    await add_environments(uow, "dev", "prod")
    async with uow.begin() as session:  # as an older Gantry left them: never announced
        for environment in (await session.exec(select(Environment))).all():
            environment.announced_at = None
            session.add(environment)
    before = len(await payloads(uow, Topic.ENVIRONMENT_CHANGED))

    assert await environments.announce_unannounced(uow=uow) == ["dev", "prod"]
    assert await environments.announce_unannounced(uow=uow) == []

    states = (await payloads(uow, Topic.ENVIRONMENT_CHANGED))[before:]
    assert [(s["code"], s["change"]) for s in states] == [("dev", "updated"), ("prod", "updated")]


async def test_a_batch_of_statuses_reads_where_the_service_runs_once(uow):  # noqa: F811
    await add_environments(uow, "staging")
    announced = await known_service(uow, "staging")
    code = announced.data["service"]
    statuses = [
        deploy_status(announced, "staging", "progressing"),
        deploy_status(announced, "staging", "succeeded"),  # finds the row the first added
        deploy_status(announced, "staging", "progressing", track="canary"),
        deploy_status(announced, "staging", "removed", track="canary"),  # deleted in the batch
        deploy_status(announced, "staging", "progressing", track="canary"),  # and made again
    ]
    records = [(status.data["service_id"].encode(), status.model_dump_json().encode()) for status in statuses]
    handler = with_prefetch(lifecycle.prefetch_statuses, partial(lifecycle.on_deploy_status, uow=uow))

    with reads_of(uow, "release_running") as reads:
        await handle_batch(Topic.DEPLOY_STATUS.value, records, handler, FakeDeadLetters(), uow)

    assert len(reads) == 2, "the read ahead, and one look-up after the delete (the index is not sure then)"
    async with uow.sessions() as session:
        rows = (await session.exec(select(Running).order_by(Running.track))).all()
    assert [(row.track, row.state) for row in rows] == [("canary", "progressing"), ("stable", "succeeded")]
    with pytest.raises(Conflict, match="undeploy it first"):
        await handlers.withdraw_release(PROJECT, code, "staging", by="bob", correlation_id="r", uow=uow)
