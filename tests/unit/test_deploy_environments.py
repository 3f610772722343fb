"""Deploy knows the environments release announces, with their Ingress settings, and forgets a
deleted one; a redelivered announcement changes nothing."""

from __future__ import annotations

from services.deploy import environments
from services.deploy.models import DEPLOY_TABLES
from shared.events import EnvironmentChanged, Topic, new_event


def announced(change: str, **fields: object) -> object:
    data = EnvironmentChanged(
        code="staging", name="Staging", tier="test", namespace="shop-staging", change=change, **fields
    )
    return new_event(Topic.ENVIRONMENT_CHANGED, data, source="gantry/release", subject="staging")


async def test_environments_follow_what_release_announces(make_uow) -> None:
    uow = await make_uow("deploy", DEPLOY_TABLES)
    created = announced("created", ingress_class="nginx", ingress_host="staging.example.org")
    await environments.on_environment_changed(created, uow=uow)
    await environments.on_environment_changed(announced("updated", ingress_host="stage.example.org"), uow=uow)
    await environments.on_environment_changed(created, uow=uow)  # redelivered: already applied
    async with uow.sessions() as session:
        known = await environments.find_environment(session, "staging")
    assert known is not None
    assert (known.namespace, known.ingress_class, known.ingress_host) == ("shop-staging", None, "stage.example.org")

    await environments.on_environment_changed(announced("deleted"), uow=uow)
    async with uow.sessions() as session:
        assert await environments.find_environment(session, "staging") is None
        assert await environments.list_environments(session) == []
