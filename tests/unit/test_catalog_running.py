"""Catalog learns where each service runs from ``deploy.status``: anywhere a state was announced,
until a ``removed`` says it runs nowhere there; a redelivered status changes nothing."""

from __future__ import annotations

from pathlib import Path

from services.catalog import running
from services.catalog.models import Project, Service
from services.catalog.running import ServiceRun
from shared.events import DeployStatus, Envelope, Topic, new_event
from tests.unit.test_catalog import RecordingScm, create, uow  # noqa: F401 - the fixture


def status(service: Service, environment: str, state: str, deployment: str = "d1") -> Envelope:
    data = DeployStatus(
        service_id=service.id,
        project=service.project,
        service=service.code,
        deployment_id=deployment,
        environment=environment,
        version="1.0.0",
        state=state,  # type: ignore[arg-type]
        desired=2,
    )
    return new_event(Topic.DEPLOY_STATUS, data, source="gantry/deploy", subject=data.subject)


async def where(uow, service: Service) -> list[str]:  # noqa: F811
    async with uow.sessions() as session:
        return await running.environments_running(session, service.id)


async def test_a_service_runs_where_deployed_until_removed(uow, tmp_path: Path) -> None:  # noqa: F811
    web = await create(uow, RecordingScm(tmp_path / "repos"))
    await running.on_deploy_status(status(web, "staging", "progressing"), uow=uow)
    await running.on_deploy_status(status(web, "production", "failed", "d2"), uow=uow)
    assert await where(uow, web) == ["production", "staging"], "any state but removed: it runs there"

    removed = status(web, "staging", "removed", "d3")
    await running.on_deploy_status(removed, uow=uow)
    assert await where(uow, web) == ["production"]

    late = status(web, "staging", "succeeded", "d1")
    await running.on_deploy_status(late, uow=uow)
    await running.on_deploy_status(status(web, "staging", "removed", "d4"), uow=uow)
    await running.on_deploy_status(late, uow=uow)  # redelivered: already applied, it changes nothing
    assert await where(uow, web) == ["production"]
    async with uow.sessions() as session:
        kept = await session.get(ServiceRun, (web.id, "production"))
    assert kept is not None and (kept.state, kept.deployment_id) == ("failed", "d2")


async def test_a_status_of_a_service_catalog_does_not_know_is_ignored(make_uow) -> None:
    uow = await make_uow("catalog", [Project, Service, ServiceRun])  # noqa: F811
    gone = Service(
        id="f" * 32,
        project="shop",
        code="gone",
        name="Gone",
        group="g",
        type="go-http",
        slug="gone",
        workload="shop-gone",
        repository_url="",
        repository_web_url="",
        repository_path="acme/gone",
        scm_project_id="local-x",
        created_by="a",
    )
    await running.on_deploy_status(status(gone, "staging", "succeeded"), uow=uow)
    assert await where(uow, gone) == []
