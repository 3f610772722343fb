"""Deploy keeps the gateway's routes and each service's Ingress in step with them: applied with the
service's deployment, re-applied when a route or an environment's Ingress settings change, in
every environment the service runs in, removed with its last route. Real SQLite, the rendered
driver writing real files, and deploy's own event wiring (``app._subscriptions``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from sqlalchemy import event

from services.deploy import app, ingresses, requests, sealed, worker
from services.deploy.cluster import CLUSTER
from services.deploy.ingress import IngressSpec
from services.deploy.ingresses import INGRESSES, Ingresses
from services.deploy.models import Instance
from services.deploy.rendered import RenderedManifestsDriver
from services.deploy.routes import KnownRoute
from shared.bus import OUTSIDE_WORK, OutsideWork
from shared.events import Envelope, EnvironmentChanged, RouteChanged, Topic, new_event
from shared.outbox import UnitOfWork
from tests.support import KEYRING
from tests.unit.conftest import statements_of
from tests.unit.test_deploy_handlers import (
    ENV,
    NAMESPACE,
    SERVICE_ID,
    add_resource,
    deploy,
    outbox,
    release,
    uow,  # noqa: F401 - the fixture
)

INGRESS = f"{ENV}/{NAMESPACE}/shop-orders.ingress.yaml"


class Cluster(RenderedManifestsDriver):
    """The rendered driver, which may be told to refuse the next Ingresses."""

    refusals = 0

    async def apply_ingress(self, spec: IngressSpec) -> None:
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("the API server is away")
        await super().apply_ingress(spec)


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path / "manifests")


@pytest.fixture
async def deliver(uow: UnitOfWork, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:  # noqa: F811
    """Hand an event to deploy's consumer of its topic, as the running service does (each request
    from its topic: without the lane, which would apply deploy's own requests in the background)."""
    monkeypatch.setattr(requests, "lane_wanted", lambda _engine: False)
    runtime = SimpleNamespace(uow=uow, engine=uow.sessions.kw["bind"], parts={sealed.KEYRING.name: KEYRING})
    CLUSTER.provide(runtime, cluster)  # type: ignore[arg-type]
    app.ROLLOUTS.provide(runtime, worker.RolloutWatcher(uow, cluster))  # type: ignore[arg-type]
    INGRESSES.provide(runtime, Ingresses(uow, cluster))  # type: ignore[arg-type]
    async with app._requests(runtime):  # type: ignore[arg-type]
        consumers = app._subscriptions(runtime)  # type: ignore[arg-type]
        yield _sender(consumers)


def _sender(consumers: dict[str, Any]) -> Any:

    async def send(envelope: Envelope) -> None:
        handler = consumers[envelope.type]
        outside: OutsideWork | None = getattr(handler, OUTSIDE_WORK, None)  # around the batch's transaction
        if outside is not None:
            await outside.before([envelope])
        await handler(envelope)
        if outside is not None:
            await outside.after([envelope])

    return send


def route(name: str, path: str, change: str = "created", service: str = "shop/orders", strip: bool = True) -> Envelope:
    data = RouteChanged(name=name, path=path, service=service, strip_prefix=strip, change=change)  # type: ignore[arg-type]
    return new_event(Topic.ROUTE_CHANGED, data, source="gantry/gateway", subject=name)


def environment(code: str = ENV, change: str = "created", **ingress: str) -> Envelope:
    data = EnvironmentChanged(code=code, name=code, tier="dev", namespace=NAMESPACE, change=change, **ingress)  # type: ignore[arg-type]
    return new_event(Topic.ENVIRONMENT_CHANGED, data, source="gantry/release", subject=code)


def ingress_in(cluster: Cluster, where: str = INGRESS) -> dict[str, Any] | None:
    path = cluster.root / where
    return yaml.safe_load(path.read_text().split("\n", 1)[1]) if path.exists() else None


def paths(ingress: dict[str, Any] | None) -> list[str]:
    assert ingress is not None, "no Ingress"
    return [p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]]


async def deployed(uow: UnitOfWork, deliver: Any, environment_code: str = ENV) -> None:  # noqa: F811
    """A first deployment of shop/orders to ``environment_code``, applied by the worker."""
    await release(uow, "1.0.0", environment=environment_code)
    await deploy(uow, "1.0.0", environment=environment_code, resources=[])
    for request in await outbox(uow, Topic.DEPLOY_REQUESTED):
        await deliver(request)


async def test_routes_reach_the_ingress_applied_with_the_deployment(uow, deliver, cluster) -> None:  # noqa: F811
    await deliver(environment(ingress_class="nginx", ingress_host="dev.example.org"))
    await deliver(route("orders", "/orders/**"))
    assert ingress_in(cluster) is None, "the service runs nowhere yet: no Ingress"

    await deployed(uow, deliver)
    ingress = ingress_in(cluster)
    assert paths(ingress) == ["/(orders)(?:/|$)(.*)"]
    assert ingress is not None and ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["rules"][0]["host"] == "dev.example.org"
    assert (cluster.root / ENV / NAMESPACE / "shop-orders.yaml").exists(), "beside the workload's manifests"

    await deliver(route("orders", "/shop/orders/**", "updated", strip=False))
    await deliver(route("by-id", "/o/*", service=SERVICE_ID))
    await deliver(route("cart", "/cart/**", service="shop/cart"))  # another service's
    assert paths(ingress_in(cluster)) == ["/(o)/([^/]+)$", "/()(shop/orders(?:/.*)?)$"]

    await deliver(environment(change="updated", ingress_class="traefik", ingress_host="dev2.example.org"))
    ingress = ingress_in(cluster)
    assert paths(ingress) == ["/shop/orders"]
    assert ingress is not None and ingress["metadata"]["annotations"]["gantry/routes-not-served"] == "by-id"
    assert ingress["spec"]["rules"][0]["host"] == "dev2.example.org"


async def test_a_deleted_or_moved_route_leaves_the_ingress(uow, deliver, cluster) -> None:  # noqa: F811
    await deliver(environment(ingress_class="nginx"))
    await deployed(uow, deliver)
    await deliver(route("orders", "/orders/**"))
    await deliver(route("export", "/export"))
    assert len(paths(ingress_in(cluster))) == 2

    deleted = route("orders", "/orders/**", "deleted")
    await deliver(deleted)
    assert paths(ingress_in(cluster)) == ["/(export)()$"]
    await deliver(route("orders", "/orders/**"))
    await deliver(deleted)  # redelivered: already applied, the new route stays
    assert len(paths(ingress_in(cluster))) == 2
    await deliver(route("orders", "/orders/**", "deleted"))

    await deliver(route("export", "/export", "updated", service="shop/cart"))
    assert ingress_in(cluster) is None, "no route left: the Ingress is removed"


async def test_a_route_change_reaches_every_environment_the_service_runs_in(uow, deliver, cluster) -> None:  # noqa: F811
    for code in (ENV, "test"):
        await deliver(environment(code, ingress_class="nginx", ingress_host=f"{code}.example.org"))
        await deployed(uow, deliver, code)
    await deliver(route("orders", "/orders/**"))
    for code in (ENV, "test"):
        ingress = ingress_in(cluster, f"{code}/{NAMESPACE}/shop-orders.ingress.yaml")
        assert paths(ingress) == ["/(orders)(?:/|$)(.*)"]
        assert ingress is not None and ingress["spec"]["rules"][0]["host"] == f"{code}.example.org"


async def test_a_refused_ingress_is_put_right_by_the_next_deployment(uow, deliver, cluster) -> None:  # noqa: F811
    await deliver(environment(ingress_class="nginx"))
    await deployed(uow, deliver)
    cluster.refusals = 1
    await deliver(route("orders", "/orders/**"))  # logged, not raised: the route is kept all the same
    assert ingress_in(cluster) is None
    await add_resource(uow, "cfg", "config", level="info")
    await deploy(uow, "1.0.0", resources=["cfg"])
    requests = await outbox(uow, Topic.DEPLOY_REQUESTED)
    await deliver(requests[-1])
    assert paths(ingress_in(cluster)) == ["/(orders)(?:/|$)(.*)"]


async def test_a_service_that_runs_nowhere_has_no_ingress(uow, cluster) -> None:  # noqa: F811
    where = ingresses.Where(SERVICE_ID, "shop", "orders", ENV, NAMESPACE)
    async with uow.begin() as session:
        session.add(KnownRoute(name="orders", path="/orders/**", service="shop/orders"))
    async with uow.sessions() as session:
        [spec] = await ingresses.ingress_specs(session, [where])
    assert spec.routes == () and (spec.ingress_class, spec.host) == (None, None)


async def test_services_no_route_leads_to_are_synced_from_one_read(uow, deliver, cluster) -> None:  # noqa: F811
    """Most services have no route: a batch of their deployments reads the routes and nothing
    else, and leaves them no Ingress (the one a removed route left behind goes)."""
    await deliver(environment(ingress_class="nginx", ingress_host="dev.example.org"))
    async with uow.begin() as session:
        session.add(running(SERVICE_ID, "shop", "orders"))
        session.add(running("svc-cart", "shop", "cart"))
    left = f"{ENV}/{NAMESPACE}/shop-cart.ingress.yaml"
    (cluster.root / left).parent.mkdir(parents=True, exist_ok=True)
    (cluster.root / left).write_text("# left by a route removed since\nkind: Ingress\n")
    places = [
        ingresses.Where(SERVICE_ID, "shop", "orders", ENV, NAMESPACE),
        ingresses.Where("svc-cart", "shop", "cart", ENV, NAMESPACE),
    ]
    with statements_of(uow) as statements:
        await Ingresses(uow, cluster).sync_all(places)

    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1 and "FROM deploy_routes" in reads[0], reads
    assert ingress_in(cluster) is None and ingress_in(cluster, left) is None, "no route: no Ingress"


def running(service_id: str, project: str, service: str, environment: str = ENV) -> Instance:
    return Instance(
        service_id=service_id,
        project=project,
        service=service,
        environment=environment,
        namespace=NAMESPACE,
        version="1.0.0",
        image=f"registry/{service}:1.0.0",
        track="stable",
        replicas=1,
        deployment_id=f"d-{service}-{environment}",
        state="rendered",
    )


async def test_a_batch_of_deployments_syncs_each_services_ingress_from_three_reads(uow, deliver, cluster) -> None:  # noqa: F811
    """After a batch of deployments each service's Ingress is synced once; the tables are read in
    three statements for the whole batch (what runs, the routes, the environments), not three per
    service, and a refused Ingress does not keep the others from the cluster."""
    await deliver(environment(ingress_class="nginx", ingress_host="dev.example.org"))
    await deliver(route("orders", "/orders/**"))
    await deliver(route("cart", "/cart/**", service="svc-cart"))  # by id
    await deliver(route("pay", "/pay", service="shop/pay"))  # a service that runs nowhere
    async with uow.begin() as session:
        session.add(running(SERVICE_ID, "shop", "orders"))
        session.add(running("svc-cart", "shop", "cart"))
    places = [
        ingresses.Where("svc-cart", "shop", "cart", ENV, NAMESPACE),
        ingresses.Where(SERVICE_ID, "shop", "orders", ENV, NAMESPACE),
        ingresses.Where("svc-pay", "shop", "pay", ENV, NAMESPACE),
        ingresses.Where(SERVICE_ID, "shop", "orders", ENV, NAMESPACE),  # twice in the batch: synced once
    ]
    cluster.refusals = 1  # the first (cart's) is refused
    engine = uow.sessions.kw["bind"].sync_engine
    statements: list[str] = []
    listener = lambda _c, _cur, statement, *_rest: statements.append(statement)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        await Ingresses(uow, cluster).sync_all(places)
    finally:
        event.remove(engine, "before_cursor_execute", listener)

    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 3, reads
    assert ingress_in(cluster, f"{ENV}/{NAMESPACE}/shop-cart.ingress.yaml") is None, "refused"
    orders = ingress_in(cluster)
    assert paths(orders) == ["/(orders)(?:/|$)(.*)"], "synced after the refusal all the same"
    assert orders is not None and orders["spec"]["rules"][0]["host"] == "dev.example.org"
    assert ingress_in(cluster, f"{ENV}/{NAMESPACE}/shop-pay.ingress.yaml") is None, "runs nowhere: no Ingress"

    await Ingresses(uow, cluster).sync_all(places)  # the cluster is back
    assert paths(ingress_in(cluster, f"{ENV}/{NAMESPACE}/shop-cart.ingress.yaml")) == ["/(cart)(?:/|$)(.*)"]
