"""Release's use cases against a real SQLite file: bindings, auto-release, the outbox and the inbox."""

from __future__ import annotations

import json
import uuid
from functools import partial

import pytest
import yaml
from sqlmodel import col, select

from services.release import environments, handlers, lifecycle
from services.release.models import TABLES, EnvironmentCreate, KnownVersion
from shared.bus import with_prefetch
from shared.consume import handle_batch
from shared.errors import Conflict, InvalidInput, NotFound, PoisonEvent
from shared.events import Envelope, ServiceCreated, Topic, VersionCreated, new_event
from shared.outbox import InboxEntry, OutboxMessage, UnitOfWork
from tests.unit.conftest import reads_of
from tests.unit.test_shared import FakeDeadLetters

PROJECT = "shop"


@pytest.fixture
async def uow(make_uow) -> UnitOfWork:
    return await make_uow("release", TABLES)


def service_created(code: str | None = None, project: str = PROJECT) -> Envelope:
    code = code or f"svc-{uuid.uuid4().hex[:6]}"
    data = ServiceCreated(
        service_id=uuid.uuid4().hex,
        project=project,
        service=code,
        name=code.title(),
        group="com.acme",
        type="python-fastapi",
        repository_url="file:///r.git",
        repository_web_url="file:///r.git",
        repository_path=f"acme/{code}",
        scm_project_id="acme/x",
    )
    return new_event(Topic.SERVICE_CREATED, data, source="gantry/catalog", subject=f"{project}/{code}")


def version_created(service: Envelope, version: str, *, ref: str = "main", tag: bool = False) -> Envelope:
    data = VersionCreated(
        service_id=service.data["service_id"],
        project=service.data["project"],
        service=service.data["service"],
        version=version,
        sha="a" * 40,
        ref=ref,
        tag=tag,
        pipeline_id=abs(hash(version)) % 10_000,
        image=f"registry.local/shop/web:{version}",
    )
    return new_event(
        Topic.VERSION_CREATED,
        data,
        source="gantry/versioning",
        subject=service.subject,
        correlation_id=f"chain-{version}",
    )


async def released_events(uow: UnitOfWork) -> list[tuple[str, dict]]:
    async with uow.sessions() as session:
        rows = await session.exec(
            select(OutboxMessage)
            .where(OutboxMessage.topic == Topic.VERSION_RELEASED.value)
            .order_by(col(OutboxMessage.id))
        )
        return [(row.key, json.loads(row.payload)) for row in rows.all()]


async def add_environments(uow: UnitOfWork, *codes: str) -> None:
    for code in codes:
        await environments.create_environment(
            EnvironmentCreate(code=code, name=code.upper(), tier="test"), by="root", uow=uow
        )


async def known_service(uow: UnitOfWork, *environments: str, auto: bool = False) -> Envelope:
    """A service release has learned of, released to ``environments`` (before any version)."""
    announced = service_created()
    await lifecycle.on_service_created(announced, uow=uow)
    code = announced.data["service"]
    for environment in environments:
        await handlers.release_service(PROJECT, code, environment, by="alice", correlation_id="req-bind", uow=uow)
    if auto:
        await handlers.set_auto_release(PROJECT, code, True, uow=uow)
    return announced


async def test_create_environment_derives_namespace_and_refuses_duplicates(uow):
    created = await environments.create_environment(
        EnvironmentCreate(code="staging-eu", name="Staging EU", tier="staging"), by="root", uow=uow
    )
    assert (created.namespace, created.tier, created.created_by) == (
        "staging-eu",
        "staging",
        "root",
    )
    assert [e.code for e in await environments.list_environments(uow=uow)] == ["staging-eu"]

    with pytest.raises(Conflict, match="already exists"):
        await environments.create_environment(
            EnvironmentCreate(code="staging-eu", name="Again", tier="staging"), by="root", uow=uow
        )
    with pytest.raises(Conflict, match="namespace 'staging-eu' is already used"):
        await environments.create_environment(
            EnvironmentCreate(code="eu", name="EU", tier="prod", namespace="staging-eu"),
            by="root",
            uow=uow,
        )


@pytest.mark.parametrize(
    ("code", "tier", "namespace", "message"),
    [
        ("Prod", "prod", None, "environment code 'Prod' is not valid"),
        ("prod_1", "prod", None, "environment code 'prod_1' is not valid"),
        ("-prod", "prod", None, "environment code '-prod' is not valid"),
        ("prod", "production", None, "choose one of dev, test, staging, prod"),
        ("prod", "prod", "Prod.NS", "is not a Kubernetes namespace name"),
    ],
)
async def test_create_environment_validates_input(uow, code, tier, namespace, message):
    with pytest.raises(InvalidInput, match=message):
        await environments.create_environment(
            EnvironmentCreate(code=code, name="Prod", tier=tier, namespace=namespace),
            by="root",
            uow=uow,
        )


async def test_auto_release_sends_a_new_version_to_every_bound_environment(uow):
    await add_environments(uow, "dev", "staging", "prod")
    announced = await known_service(uow, "dev", "staging", auto=True)
    assert await released_events(uow) == []  # no version yet: the bindings wait for one

    created = version_created(announced, "1.0.0")
    await handlers.on_version_created(created, uow=uow)

    events = await released_events(uow)
    assert [payload["data"]["environment"] for _, payload in events] == ["dev", "staging"]
    for key, payload in events:
        assert key == announced.data["service_id"]
        assert payload["type"] == "version.released"
        assert payload["correlation_id"] == created.correlation_id
        assert payload["causation_id"] == created.id
        assert payload["data"] | {"environment": None, "namespace": None} == {
            "service_id": announced.data["service_id"],
            "project": PROJECT,
            "service": announced.data["service"],
            "environment": None,
            "namespace": None,
            "version": "1.0.0",
            "image": "registry.local/shop/web:1.0.0",
            "trigger": "auto",
            "by": "auto-release",
        }
    overview = await handlers.list_releases(PROJECT, announced.data["service"], uow=uow)
    assert overview.auto_release is True
    assert {t.environment: t.latest.version for t in overview.environments if t.latest} == {
        "dev": "1.0.0",
        "staging": "1.0.0",
    }


async def test_no_release_when_auto_release_is_off(uow):
    await add_environments(uow, "dev")
    announced = await known_service(uow, "dev")

    await handlers.on_version_created(version_created(announced, "1.0.0"), uow=uow)

    assert await released_events(uow) == []
    overview = await handlers.list_releases(PROJECT, announced.data["service"], uow=uow)
    assert overview.auto_release is False
    assert overview.environments[0].latest is None
    async with uow.sessions() as session:
        assert [v.version for v in (await session.exec(select(KnownVersion))).all()] == ["1.0.0"]


async def test_an_environment_already_released_to_cannot_be_released_to_again(uow):
    """The guide: "An environment the service is already released to cannot be released to again"."""
    await add_environments(uow, "dev")
    announced = await known_service(uow, "dev")

    with pytest.raises(Conflict, match="already released to environment 'dev'"):
        await handlers.release_service(
            PROJECT, announced.data["service"], "dev", by="bob", correlation_id="r2", uow=uow
        )


async def test_releasing_to_an_environment_sends_the_newest_known_version_at_once(uow):
    await add_environments(uow, "dev")
    announced = await known_service(uow)
    code = announced.data["service"]
    for version in ("1.0.0", "1.1.0"):
        await handlers.on_version_created(version_created(announced, version), uow=uow)

    target = await handlers.release_service(PROJECT, code, "dev", by="alice", correlation_id="req-1", uow=uow)

    assert target.latest is not None and target.latest.version == "1.1.0"
    [(_, payload)] = await released_events(uow)
    assert payload["correlation_id"] == "req-1"
    assert payload["data"]["trigger"] == "manual" and payload["data"]["by"] == "alice"
    assert payload["data"]["version"] == "1.1.0"


async def test_redelivered_events_are_applied_once(uow):
    await add_environments(uow, "dev")
    announced = service_created()
    await lifecycle.on_service_created(announced, uow=uow)
    await lifecycle.on_service_created(announced, uow=uow)
    code = announced.data["service"]
    await handlers.release_service(PROJECT, code, "dev", by="alice", correlation_id="r", uow=uow)
    await handlers.set_auto_release(PROJECT, code, True, uow=uow)
    created = version_created(announced, "2.0.0")

    await handlers.on_version_created(created, uow=uow)
    await handlers.on_version_created(created, uow=uow)
    # the same version announced again under a new event id is not released twice either
    await handlers.on_version_created(version_created(announced, "2.0.0"), uow=uow)

    assert len(await released_events(uow)) == 1
    history = await handlers.list_release_history(PROJECT, code, "dev", uow=uow)
    assert [r.version for r in history] == ["2.0.0"]
    async with uow.sessions() as session:
        applied = (await session.exec(select(InboxEntry.event_id))).all()
    assert sorted(applied).count(created.id) == 1


async def test_a_version_before_its_service_announcement_is_kept(uow):
    """service.created travels on another topic: a consumer catching up may see the version first."""
    announced = service_created()
    await handlers.on_version_created(version_created(announced, "1.0.0"), uow=uow)
    await lifecycle.on_service_created(announced, uow=uow)
    await add_environments(uow, "dev")
    code = announced.data["service"]
    target = await handlers.release_service(PROJECT, code, "dev", by="bob", correlation_id="r", uow=uow)
    assert target.latest is not None and target.latest.version == "1.0.0"
    assert (await handlers.list_releases(PROJECT, code, uow=uow)).service == code


async def test_event_data_that_does_not_fit_is_poison(uow):
    broken = Envelope(type="version.created", source="x", subject="x", correlation_id="c", data={})
    with pytest.raises(PoisonEvent, match="unusable data for VersionCreated: service_id: Field required; project"):
        await handlers.on_version_created(broken, uow=uow)
    async with uow.sessions() as session:
        assert (await session.exec(select(InboxEntry))).all() == []


async def test_release_one_version_records_history_with_deployment_files(uow):
    await add_environments(uow, "dev", "prod")
    announced = await known_service(uow, "dev")
    code = announced.data["service"]
    for version in ("1.0.0", "1.1.0"):
        await handlers.on_version_created(version_created(announced, version), uow=uow)

    with pytest.raises(NotFound, match="version '9.9.9' .* is not known"):
        await handlers.release_version(PROJECT, code, "dev", "9.9.9", by="bob", correlation_id="r", uow=uow)
    with pytest.raises(Conflict, match="release the service to prod first"):
        await handlers.release_version(PROJECT, code, "prod", "1.0.0", by="bob", correlation_id="r", uow=uow)
    for version in ("1.1.0", "1.0.0"):
        await handlers.release_version(
            PROJECT, code, "dev", version, by="bob", correlation_id=f"req-{version}", uow=uow
        )

    history = await handlers.list_release_history(PROJECT, code, "dev", uow=uow)
    assert [(r.version, r.trigger, r.by) for r in history] == [
        ("1.0.0", "manual", "bob"),
        ("1.1.0", "manual", "bob"),
    ]
    assert history[0].deployment_files == yaml.safe_dump(
        yaml.safe_load(history[0].deployment_files), sort_keys=False, allow_unicode=True
    ), "libyaml's emitter writes the bytes PyYAML's own would"
    files = yaml.safe_load(history[0].deployment_files)
    assert files["metadata"]["namespace"] == "dev"
    assert files["metadata"]["labels"]["app.kubernetes.io/version"] == "1.0.0"
    assert files["spec"]["image"] == "registry.local/shop/web:1.0.0"
    assert files["spec"]["version"]["name"] == "1.0.0"
    assert files["spec"]["release"] == {
        "trigger": "manual",
        "by": "bob",
        "released_at": history[0].released_at.isoformat(),
    }
    assert [p["correlation_id"] for _, p in await released_events(uow)] == [
        "req-1.1.0",
        "req-1.0.0",
    ]


async def test_unknown_service_and_environment_say_how_to_fix(uow):
    with pytest.raises(NotFound, match="not known to release yet"):
        await handlers.list_releases(PROJECT, "ghost", uow=uow)
    announced = await known_service(uow)
    with pytest.raises(NotFound, match="POST /api/release/environments"):
        await handlers.release_service(
            PROJECT, announced.data["service"], "nowhere", by="a", correlation_id="r", uow=uow
        )


async def test_a_second_service_with_the_same_code_is_poison(uow):
    await lifecycle.on_service_created(service_created("web"), uow=uow)
    with pytest.raises(PoisonEvent, match="already known"):
        await lifecycle.on_service_created(service_created("web"), uow=uow)


async def test_a_batch_of_versions_reads_its_versions_bindings_and_environments_once(uow):
    await add_environments(uow, "dev", "staging", "prod")
    bound = await known_service(uow, "staging", "dev", auto=True)
    unbound = await known_service(uow, auto=True)
    events = [
        version_created(bound, "1.0.0"),
        version_created(bound, "1.1.0"),
        version_created(bound, "1.0.0"),  # a version already known (another event, same name)
        version_created(unbound, "2.0.0"),
    ]
    records = [(event.data["service_id"].encode(), event.model_dump_json().encode()) for event in events]
    handler = with_prefetch(handlers.prefetch_versions, partial(handlers.on_version_created, uow=uow))

    with (
        reads_of(uow, "release_versions") as versions,
        reads_of(uow, "release_bindings") as bindings,
        reads_of(uow, "environments") as environments_read,
    ):
        await handle_batch(Topic.VERSION_CREATED.value, records, handler, FakeDeadLetters(), uow)

    assert (len(versions), len(bindings), len(environments_read)) == (1, 1, 1), "once each for the batch"
    # the same as one at a time: each new version of the bound service to its environments, in the
    # order it was bound to them; the second 1.0.0 found the first (added by the batch) and stopped
    released = [
        (payload["data"]["version"], payload["data"]["environment"]) for _, payload in await released_events(uow)
    ]
    assert released == [("1.0.0", "staging"), ("1.0.0", "dev"), ("1.1.0", "staging"), ("1.1.0", "dev")]
    async with uow.sessions() as session:
        known = (await session.exec(select(KnownVersion.version).order_by(col(KnownVersion.id)))).all()
    assert known == ["1.0.0", "1.1.0", "2.0.0"]
