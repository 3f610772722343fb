"""The deploy admin's organization view through deploy's HTTP API: list the services released
somewhere, open one, see its versions, deploy a released one, read the deployment back.

The guide's "Deploy > Services" starts at organization level; a token with deploy-admin alone is
enough. Project roles see only their projects' services."""

from __future__ import annotations

import re

import httpx

from services.deploy import handlers, known_services
from shared.events import ReleaseWithdrawn, Topic, VersionReleased, new_event
from shared.outbox import UnitOfWork
from tests.support import ADMIN, token
from tests.unit.test_deploy_api import (
    DEPLOYER,
    client,  # noqa: F401 - the fixture
    cluster,  # noqa: F401 - the fixture
    deployment,
)
from tests.unit.test_deploy_handlers import ENV, PROJECT, SERVICE, FakeCluster, release, uow, work  # noqa: F401
from tests.unit.test_deploy_lifecycle import service_changed

SHOP_MEMBER = token(f"{PROJECT}:project-member", user="sam")
BANK_OWNER = token("bank:project-owner", user="bea")


async def release_other(uow: UnitOfWork, project: str, service: str, version: str, environment: str = ENV) -> None:  # noqa: F811
    data = VersionReleased(
        service_id=f"id-{project}-{service}",
        project=project,
        service=service,
        environment=environment,
        namespace=f"{project}-{environment}",
        version=version,
        image=f"registry.local/{project}/{service}:{version}",
        trigger="auto",
        by="release",
    )
    event = new_event(Topic.VERSION_RELEASED, data, source="gantry/release", subject=data.subject, correlation_id="c")
    await handlers.record_released_version(event, uow=uow)


def next_page(answer: httpx.Response) -> str | None:
    found = re.match(r'<([^>]+)>; rel="next"', answer.headers.get("link", ""))
    return found.group(1) if found else None


async def deployed_orders(client: httpx.AsyncClient, uow: UnitOfWork, cluster: FakeCluster) -> str:  # noqa: F811
    """shop/orders released (1.0.0, 1.1.0) to dev and 1.1.0 to qa; 1.0.0 deployed to dev by dora."""
    await release(uow, "1.0.0", "1.1.0")
    await release(uow, "1.1.0", environment="qa")
    answer = await client.post("/deployments", json=deployment("1.0.0", resources=[], replicas=2), headers=DEPLOYER)
    assert answer.status_code == 202, answer.text
    await work(uow, cluster)
    return str(answer.json()["id"])


async def test_a_deploy_admin_lists_every_released_service_across_projects(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    deployment_id = await deployed_orders(client, uow, cluster)
    await release_other(uow, "bank", "ledger", "3.0.0")

    listed = await client.get("/services", headers=DEPLOYER)

    assert listed.status_code == 200, listed.text
    assert [(s["project"], s["service"], s["state"]) for s in listed.json()] == [
        ("bank", "ledger", "enabled"),
        ("shop", "orders", "enabled"),
    ]
    orders = listed.json()[1]
    dev, qa = orders["environments"]
    assert (dev["environment"], qa["environment"]) == ("dev", "qa")
    assert [v["version"] for v in dev["versions"]] == ["1.1.0", "1.0.0"], "the most recent first"
    assert [v["version"] for v in qa["versions"]] == ["1.1.0"]
    stable = dev["stable"]
    assert (stable["version"], stable["state"], stable["replicas"]) == ("1.0.0", "rendered", 2)
    assert [stable[n] for n in ("desired", "current", "updated", "available")] == [None] * 4
    assert dev["canary"] is None and qa["stable"] is None and qa["last_deployment"] is None
    last = dev["last_deployment"]
    assert (last["id"], last["by"], last["trigger"], last["version"]) == (deployment_id, "dora", "manual", "1.0.0")
    assert (await client.get("/services", headers=ADMIN)).json() == listed.json()


async def test_project_roles_see_only_their_projects_services(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
) -> None:
    await release(uow, "1.0.0")
    await release_other(uow, "bank", "ledger", "3.0.0")

    shop = await client.get("/services", headers=SHOP_MEMBER)
    bank = await client.get("/services", headers=BANK_OWNER)
    nobody = await client.get("/services", headers=token(user="nina"))
    anonymous = await client.get("/services")

    assert [s["service"] for s in shop.json()] == ["orders"]
    assert [s["service"] for s in bank.json()] == ["ledger"]
    assert nobody.json() == [] and anonymous.status_code == 401
    assert (await client.get("/services/bank/ledger", headers=BANK_OWNER)).status_code == 200
    refused = await client.get("/services/bank/ledger", headers=SHOP_MEMBER)
    assert refused.status_code == 403 and "bank:project-owner" in refused.json()["detail"]


async def test_services_are_searched_and_paged(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
) -> None:
    await release(uow, "1.0.0")
    for service in ("ledger", "payments", "accounts"):
        await release_other(uow, "bank", service, "1.0.0")
    await known_services.on_service_changed(service_changed("updated", enabled=True, name="Order Desk"), uow=uow)

    def codes(answer: httpx.Response) -> list[str]:
        return [s["service"] for s in answer.json()]

    assert codes(await client.get("/services", params={"q": "LEDG"}, headers=DEPLOYER)) == ["ledger"]
    assert codes(await client.get("/services", params={"q": "order desk"}, headers=DEPLOYER)) == ["orders"]
    assert codes(await client.get("/services", params={"q": "bank"}, headers=DEPLOYER)) == [
        "accounts",
        "ledger",
        "payments",
    ]
    seen: list[str] = []
    url: str | None = "/services?limit=3"
    while url is not None:
        answer = await client.get(url, headers=DEPLOYER)
        assert answer.status_code == 200 and len(answer.json()) <= 3
        seen += codes(answer)
        url = next_page(answer)
    assert seen == ["accounts", "ledger", "payments", "orders"]
    assert (await client.get("/services?limit=501", headers=DEPLOYER)).status_code == 422
    assert (await client.get("/services?cursor=%%%", headers=DEPLOYER)).status_code == 400


async def test_one_service_with_its_deployment_history(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await deployed_orders(client, uow, cluster)
    again = await client.post("/deployments", json=deployment("latest"), headers=DEPLOYER)
    await work(uow, cluster)

    service = await client.get(f"/services/{PROJECT}/{SERVICE}", headers=DEPLOYER)
    unknown = await client.get(f"/services/{PROJECT}/nothing", headers=DEPLOYER)

    assert service.status_code == 200, service.text
    dev, qa = service.json()["environments"]
    assert [(d["version"], d["by"]) for d in dev["deployments"]] == [("1.1.0", "dora"), ("1.0.0", "dora")]
    assert dev["last_deployment"]["id"] == again.json()["id"] == dev["deployments"][0]["id"]
    assert dev["stable"]["version"] == "1.1.0" and qa["deployments"] == []
    assert unknown.status_code == 404 and "release it first" in unknown.json()["detail"]


async def test_a_deployment_is_read_by_the_id_its_request_answered(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    deployment_id = await deployed_orders(client, uow, cluster)

    by_deployer = await client.get(f"/deployments/{deployment_id}", headers=DEPLOYER)
    by_member = await client.get(f"/deployments/{deployment_id}", headers=SHOP_MEMBER)
    by_outsider = await client.get(f"/deployments/{deployment_id}", headers=BANK_OWNER)
    unknown = await client.get("/deployments/nope", headers=DEPLOYER)

    assert by_deployer.status_code == by_member.status_code == 200
    assert (by_deployer.json()["id"], by_deployer.json()["state"]) == (deployment_id, "rendered")
    assert by_deployer.json()["available"] is None, "rendered: no pod counts"
    assert by_outsider.status_code == 403
    assert unknown.status_code == 404 and "use the id a deploy action answered with" in unknown.json()["detail"]
    assert (await client.get(f"/deployments/{deployment_id}")).status_code == 401


async def test_latest_deploys_the_version_released_last_and_says_which(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
) -> None:
    await release(uow, "2.0.0", "1.0.0")  # released last: 1.0.0
    nothing_yet = await client.post(
        "/deployments", json=deployment("latest", environment="qa", resources=[]), headers=DEPLOYER
    )
    await release(uow, "3.0.0", environment="qa")

    chosen = await client.post("/deployments", json=deployment("latest", resources=[]), headers=DEPLOYER)

    assert nothing_yet.status_code == 404, "qa is not known yet: nothing was released there"
    assert chosen.status_code == 202 and chosen.json()["version"] == "1.0.0"
    assert chosen.json()["image"] == "registry.local/shop/orders:1.0.0"


async def test_a_withdrawn_release_leaves_the_view_and_cannot_be_deployed(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await deployed_orders(client, uow, cluster)
    data = ReleaseWithdrawn(service_id="svc-orders-1", project=PROJECT, service=SERVICE, environment="qa", by="bo")
    event = new_event(Topic.RELEASE_WITHDRAWN, data, source="gantry/release", subject=data.subject, correlation_id="c")
    await known_services.on_release_withdrawn(event, uow=uow)

    refused = await client.post("/deployments", json=deployment("1.1.0", environment="qa"), headers=DEPLOYER)
    listed = (await client.get("/services", headers=DEPLOYER)).json()

    assert refused.status_code == 409 and "is not released to qa" in refused.json()["detail"]
    assert [e["environment"] for e in listed[0]["environments"]] == ["dev"]


async def test_a_disabled_service_is_shown_and_refused(
    client: httpx.AsyncClient,  # noqa: F811
    uow: UnitOfWork,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
) -> None:
    await deployed_orders(client, uow, cluster)
    await known_services.on_service_changed(service_changed("disabled", enabled=False), uow=uow)

    refused = await client.post("/deployments", json=deployment("1.1.0"), headers=DEPLOYER)
    listed = (await client.get("/services", headers=DEPLOYER)).json()

    assert refused.status_code == 409 and "shop/orders is disabled" in refused.json()["detail"]
    assert (listed[0]["name"], listed[0]["state"]) == ("Orders", "disabled")
