"""Deploy follows the lifecycle of what it deploys, on a real SQLite file: a service disabled,
enabled or deleted in catalog (``service.changed``), a release withdrawn (``release.withdrawn``).

The guide's rule: "A disabled service keeps its versions but is not released or deployed … and is
skipped by auto-release and auto-deploy; enabling restores."
"""

from __future__ import annotations

from typing import Literal

import pytest
from sqlmodel import select

from services.deploy import handlers, known_services, views
from services.deploy.handlers import Action
from services.deploy.models import AutoDeployRule, ReleasedVersion
from shared.errors import Conflict, NotFound
from shared.events import Envelope, ReleaseWithdrawn, ServiceChanged, Topic, new_event
from shared.outbox import UnitOfWork
from tests.unit.test_deploy_handlers import (
    ENV,
    PROJECT,
    SERVICE,
    SERVICE_ID,
    FakeCluster,
    cluster,  # noqa: F401 - the fixture
    deploy,
    outbox,
    ready,
    release,
    released_event,
    uow,  # noqa: F401 - the fixture
    work,
)

Change = Literal["updated", "disabled", "enabled", "deleted"]


def service_changed(change: Change, *, enabled: bool, name: str = "Orders") -> Envelope:
    data = ServiceChanged(
        service_id=SERVICE_ID, project=PROJECT, service=SERVICE, name=name, enabled=enabled, change=change
    )
    return new_event(Topic.SERVICE_CHANGED, data, source="gantry/catalog", subject=data.subject, correlation_id="c")


def withdrawn(environment: str = ENV) -> Envelope:
    data = ReleaseWithdrawn(service_id=SERVICE_ID, project=PROJECT, service=SERVICE, environment=environment, by="bo")
    return new_event(Topic.RELEASE_WITHDRAWN, data, source="gantry/release", subject=data.subject, correlation_id="c")


async def test_a_disabled_service_is_not_deployed_until_enabled(
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await ready(uow, cluster)
    await known_services.on_service_changed(service_changed("disabled", enabled=False), uow=uow)

    with pytest.raises(Conflict, match="shop/orders is disabled") as refused:
        await deploy(uow, "1.0.0")
    assert '{"enabled": true}' in refused.value.detail
    act = Action(PROJECT, SERVICE, ENV, by="bob", correlation_id="c")
    for action in (handlers.scale(act, 3, uow=uow), handlers.rollback(act, "1.0.0", uow=uow)):
        with pytest.raises(Conflict, match="is disabled"):
            await action

    await known_services.on_service_changed(service_changed("enabled", enabled=True), uow=uow)
    assert (await deploy(uow, "1.0.0")).version == "1.0.0"


async def test_auto_deploy_skips_a_disabled_service(
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await ready(uow, cluster)
    await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="alice", uow=uow)
    await known_services.on_service_changed(service_changed("disabled", enabled=False), uow=uow)
    requested = len(await outbox(uow, Topic.DEPLOY_REQUESTED))

    skipped = await handlers.record_released_version(released_event("1.1.0"), uow=uow)
    assert skipped is None and len(await outbox(uow, Topic.DEPLOY_REQUESTED)) == requested

    await known_services.on_service_changed(service_changed("enabled", enabled=True), uow=uow)
    deployed = await handlers.record_released_version(released_event("1.2.0"), uow=uow)
    assert deployed is not None and deployed.version == "1.2.0"


async def test_a_deleted_service_is_forgotten(
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await ready(uow, cluster)
    await handlers.set_auto_deploy(PROJECT, SERVICE, ENV, True, by="alice", uow=uow)
    gone = service_changed("deleted", enabled=False)
    await known_services.on_service_changed(gone, uow=uow)
    await known_services.on_service_changed(gone, uow=uow)  # redelivered: nothing more happens
    await handlers.record_released_version(released_event("1.1.0"), uow=uow)  # late: ignored

    async with uow.sessions() as session:
        assert (await session.exec(select(ReleasedVersion))).all() == []
        assert (await session.exec(select(AutoDeployRule))).all() == []
        assert await known_services.state_of(session, SERVICE_ID) == "deleted"
    with pytest.raises(NotFound, match="release it to dev first"):
        await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)


async def test_a_withdrawn_release_can_no_longer_be_deployed_until_released_again(
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await ready(uow, cluster)
    await release(uow, "1.1.0")
    await release(uow, "1.1.0", environment="qa")
    await known_services.on_release_withdrawn(withdrawn(), uow=uow)

    for version in ("1.0.0", "1.1.0", "latest"):
        with pytest.raises(Conflict, match="released to dev"):
            await deploy(uow, version)
    state = await views.running_state(PROJECT, SERVICE, ENV, uow=uow, driver=cluster)
    assert state.stable is not None and state.stable.version == "1.0.0", "what runs keeps running"

    await release(uow, "1.1.0")
    again = await deploy(uow, "latest")
    await work(uow, cluster)
    assert again.version == "1.1.0"
    async with uow.sessions() as session:
        rows = (await session.exec(select(ReleasedVersion).where(ReleasedVersion.environment == "qa"))).all()
    assert [row.withdrawn_at for row in rows] == [None], "another environment keeps its release"
