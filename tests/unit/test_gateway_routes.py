"""Gateway routes: Ant-style path rules, match order, and the use cases on a real SQLite file."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlmodel import col, select

from services.gateway import domain, handlers, known_services
from services.gateway.api import require_route_writer
from services.gateway.known_services import KnownService
from services.gateway.models import Route, RouteCreate, RouteUpdate
from shared.auth import Principal
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from shared.events import Envelope, ServiceChanged, ServiceCreated, Topic, new_event
from shared.outbox import OutboxMessage, UnitOfWork

# -- Ant-style paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/orders/**", "/orders", "/shop/v1.2/*/items", "/a-b_c.d/**", "/*", "/**", "/x/*/y/**"]
)
def test_valid_paths(path: str) -> None:
    assert domain.validate_path(path) == path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("orders/**", "must start with '/'"),
        ("", "must start with '/'"),
        ("/", "segment ''"),
        ("/orders//items", "segment ''"),
        ("/orders/", "segment ''"),
        ("/**/items", "'**' may only be the last"),
        ("/ord ers", "segment 'ord ers'"),
        ("/orders/it*ms", "segment 'it*ms'"),
        ("/orders/{id}", "segment '{id}'"),
        ("/" + "a" * 300, "too long"),
    ],
)
def test_invalid_paths_say_why(path: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason.replace("*", r"\*").replace("{", r"\{")):
        domain.validate_path(path)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/orders/**", "/orders", True),
        ("/orders/**", "/orders/1/items", True),
        ("/orders/**", "/ordersx/1", False),
        ("/orders/*", "/orders/1", True),
        ("/orders/*", "/orders/1/items", False),
        ("/orders/*", "/orders", False),
        ("/orders/*/items", "/orders/7/items", True),
        ("/orders", "/orders", True),
        ("/orders", "/orders/1", False),
        ("/**", "/anything/at/all", True),
    ],
)
def test_matching(pattern: str, path: str, expected: bool) -> None:
    assert domain.matches(pattern, path) is expected


def test_match_order_puts_the_most_specific_first() -> None:
    routes = [
        Route(name=n, path=p, service="shop/orders", created_by="t")
        for n, p in [
            ("catch-all", "/**"),
            ("shop", "/shop/**"),
            ("items", "/shop/orders/*/items"),
            ("orders", "/shop/orders/**"),
            ("exact", "/shop/orders/export"),
            ("one", "/shop/*"),
        ]
    ]
    assert [r.name for r in domain.match_order(routes)] == ["exact", "items", "one", "orders", "shop", "catch-all"]
    resolved = {
        path: getattr(domain.resolve(routes, path), "name", None)
        for path in (
            "/shop/orders/export",
            "/shop/orders/9/items",
            "/shop/orders/9",
            "/shop/cart",
            "/shop/cart/1",
            "/else",
        )
    }
    assert resolved == {
        "/shop/orders/export": "exact",
        "/shop/orders/9/items": "items",
        "/shop/orders/9": "orders",
        "/shop/cart": "one",
        "/shop/cart/1": "shop",
        "/else": "catch-all",
    }


def test_strip_prefix_removes_the_literal_head() -> None:
    assert domain.forward_path("/api/catalog/**", "/api/catalog/projects", True) == "/projects"
    assert domain.forward_path("/api/catalog/**", "/api/catalog", True) == "/"
    assert domain.forward_path("/shop/*/items", "/shop/7/items", True) == "/7/items"
    assert domain.forward_path("/webhooks/gitlab", "/webhooks/gitlab", False) == "/webhooks/gitlab"


@pytest.mark.parametrize("target", ["shop/orders", "shop/order service", "a" * 32, "catalog"])
def test_valid_targets(target: str) -> None:
    assert domain.validate_target(target) == target


@pytest.mark.parametrize("target", ["Shop/orders", "orders", "shop/", "/orders", "shop/Orders"])
def test_invalid_targets(target: str) -> None:
    with pytest.raises(InvalidInput, match="project/service"):
        domain.validate_target(target)


def test_route_writers() -> None:
    admin = Principal("root", frozenset({"org-admin"}))
    deployer = Principal("dora", frozenset({"deploy-admin"}))
    owner = Principal("olga", frozenset({"shop:project-owner"}))
    member = Principal("mel", frozenset({"shop:project-member"}))
    for user in (admin, deployer):
        require_route_writer(user, "shop/orders")
        require_route_writer(user, "a" * 32)
    require_route_writer(owner, "shop/orders")
    with pytest.raises(Forbidden):
        require_route_writer(owner, "shop/orders", "bank/ledger")
    with pytest.raises(Forbidden):
        require_route_writer(owner, "a" * 32)
    with pytest.raises(Forbidden, match="deploy-admin"):
        require_route_writer(member, "shop/orders")


# -- use cases on a real database -------------------------------------------------------------


KNOWN = ("shop/orders", "shop/cart", "bank/ledger")


def service_id_of(target: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, target).hex


def service_event(target: str, change: str = "created", service_id: str | None = None) -> Envelope:
    """Catalog's announcement of ``target`` ('project/service'): created, or changed by ``change``."""
    project, code = target.split("/")
    known = {"service_id": service_id or service_id_of(target), "project": project, "service": code}
    if change == "created":
        data: ServiceCreated | ServiceChanged = ServiceCreated(
            **known,
            name=code,
            group=project,
            type="python",
            repository_url="",
            repository_web_url="",
            repository_path="",
            scm_project_id="1",
        )
        return new_event(Topic.SERVICE_CREATED, data, source="gantry/catalog", subject=target)
    data = ServiceChanged(**known, name=code, enabled=change != "disabled", change=change)  # type: ignore[arg-type]
    return new_event(Topic.SERVICE_CHANGED, data, source="gantry/catalog", subject=target)


@pytest.fixture
async def uow(make_uow) -> UnitOfWork:
    """The gateway's database, knowing the services of ``KNOWN`` as catalog announced them."""
    uow = await make_uow("gateway", [Route, KnownService])
    for target in KNOWN:
        await known_services.on_service_created(service_event(target), uow=uow)
    return uow


async def outbox(uow: UnitOfWork) -> list[tuple[str, str, dict[str, Any]]]:
    async with uow.sessions() as session:
        rows = (await session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id)))).all()
    return [(row.topic, row.key, json.loads(row.payload)) for row in rows]


ORDERS = RouteCreate(name="orders", path="/shop/orders/**", service="shop/orders")


async def test_builtin_routes_are_seeded_once(uow: UnitOfWork) -> None:
    assert await handlers.seed_builtin_routes(uow=uow) == len(domain.BUILTIN_ROUTES)
    assert await handlers.seed_builtin_routes(uow=uow) == 0
    routes = {r.path: r for r in await handlers.list_routes(uow=uow)}
    assert set(routes) == {
        "/api/catalog/**",
        "/api/versioning/**",
        "/api/release/**",
        "/api/deploy/**",
        "/api/gateway/**",
        "/webhooks/gitlab",
    }
    assert all(r.builtin for r in routes.values())
    assert routes["/webhooks/gitlab"].service == "versioning"
    assert not routes["/webhooks/gitlab"].strip_prefix
    events = await outbox(uow)
    assert len(events) == len(domain.BUILTIN_ROUTES)
    assert {e[2]["data"]["change"] for e in events} == {"created"}


async def test_create_writes_the_row_and_the_event_together(uow: UnitOfWork) -> None:
    route = await handlers.create_route(ORDERS, by="alice", correlation_id="cid-1", uow=uow)
    assert (route.strip_prefix, route.retryable, route.builtin) == (True, False, False)
    assert (await handlers.get_route("orders", uow=uow)).created_by == "alice"
    [(topic, key, envelope)] = await outbox(uow)
    assert (topic, key) == ("gateway.route.changed", "orders")
    assert envelope["type"] == "gateway.route.changed"
    assert envelope["correlation_id"] == "cid-1"
    assert envelope["data"] == {
        "name": "orders",
        "path": "/shop/orders/**",
        "service": "shop/orders",
        "strip_prefix": True,
        "change": "created",
    }


async def test_duplicates_are_409_naming_the_route(uow: UnitOfWork) -> None:
    await handlers.create_route(ORDERS, by="alice", correlation_id=None, uow=uow)
    same_name = RouteCreate(name="orders", path="/other/**", service="shop/orders")
    with pytest.raises(Conflict, match="route 'orders' already uses this name"):
        await handlers.create_route(same_name, by="alice", correlation_id=None, uow=uow)
    same_path = RouteCreate(name="orders-2", path="/shop/orders/**", service="shop/cart")
    with pytest.raises(Conflict, match="route 'orders' already uses this path"):
        await handlers.create_route(same_path, by="alice", correlation_id=None, uow=uow)
    assert len(await outbox(uow)) == 1


async def test_paths_inside_builtin_routes_are_refused(uow: UnitOfWork) -> None:
    await handlers.seed_builtin_routes(uow=uow)
    for path in ("/api/catalog/**", "/api/catalog/projects", "/webhooks/gitlab"):
        data = RouteCreate(name="sneaky", path=path, service="shop/orders")
        with pytest.raises(Conflict, match="built-in route"):
            await handlers.create_route(data, by="alice", correlation_id=None, uow=uow)
    ok = RouteCreate(name="api-orders", path="/api/orders/**", service="shop/orders")
    await handlers.create_route(ok, by="alice", correlation_id=None, uow=uow)


async def test_builtin_routes_are_read_only(uow: UnitOfWork) -> None:
    await handlers.seed_builtin_routes(uow=uow)
    before = len(await outbox(uow))
    with pytest.raises(Conflict, match="built-in routes are read-only"):
        await handlers.update_route("catalog-api", RouteUpdate(retryable=True), correlation_id=None, uow=uow)
    with pytest.raises(Conflict, match="built-in routes are read-only"):
        await handlers.delete_route("catalog-api", correlation_id=None, uow=uow)
    assert (await handlers.get_route("catalog-api", uow=uow)).retryable is False
    assert len(await outbox(uow)) == before


async def test_update_and_delete_announce_the_change(uow: UnitOfWork) -> None:
    await handlers.create_route(ORDERS, by="alice", correlation_id=None, uow=uow)
    updated = await handlers.update_route(
        "orders", RouteUpdate(path="/orders/**", retryable=True), correlation_id="c2", uow=uow
    )
    assert (updated.path, updated.retryable, updated.service) == ("/orders/**", True, "shop/orders")
    await handlers.delete_route("orders", correlation_id="c3", uow=uow)
    with pytest.raises(NotFound, match="route 'orders' does not exist"):
        await handlers.get_route("orders", uow=uow)
    changes = [(e[2]["data"]["change"], e[2]["data"]["path"]) for e in await outbox(uow)]
    assert changes == [("created", "/shop/orders/**"), ("updated", "/orders/**"), ("deleted", "/orders/**")]


async def test_update_to_a_taken_path_is_409(uow: UnitOfWork) -> None:
    await handlers.create_route(ORDERS, by="alice", correlation_id=None, uow=uow)
    cart = RouteCreate(name="cart", path="/shop/cart/**", service="shop/cart")
    await handlers.create_route(cart, by="alice", correlation_id=None, uow=uow)
    with pytest.raises(Conflict, match="route 'orders' already uses this path"):
        await handlers.update_route("cart", RouteUpdate(path="/shop/orders/**"), correlation_id=None, uow=uow)
    before = len(await outbox(uow))
    unchanged = await handlers.update_route("cart", RouteUpdate(path="/shop/cart/**"), correlation_id=None, uow=uow)
    assert unchanged.path == "/shop/cart/**"
    assert len(await outbox(uow)) == before  # no change, no event


async def test_bad_input_is_refused_before_anything_is_written(uow: UnitOfWork) -> None:
    for data in (
        RouteCreate(name="bad name!", path="/x/**", service="shop/x"),
        RouteCreate(name="x", path="/x/**/y", service="shop/x"),
        RouteCreate(name="x", path="/x/**", service="Shop X"),
    ):
        with pytest.raises(InvalidInput):
            await handlers.create_route(data, by="alice", correlation_id=None, uow=uow)
    with pytest.raises(NotFound):
        await handlers.update_route("nope", RouteUpdate(retryable=True), correlation_id=None, uow=uow)
    assert await outbox(uow) == []


async def test_route_table_and_match(uow: UnitOfWork) -> None:
    await handlers.seed_builtin_routes(uow=uow)
    for name, path in [("shop", "/shop/**"), ("orders", "/shop/orders/**")]:
        data = RouteCreate(name=name, path=path, service="shop/orders", strip_prefix=name == "orders")
        await handlers.create_route(data, by="alice", correlation_id=None, uow=uow)
    table = await handlers.route_table(uow=uow)
    assert [e.order for e in table] == list(range(1, len(table) + 1))
    names = [e.name for e in table]
    assert names[0] == "gitlab-webhook"  # the one exact path
    assert names.index("orders") < names.index("shop")
    found = await handlers.match_path("/shop/orders/42", uow=uow)
    assert (found.route.name, found.forward_path) == ("orders", "/42")
    found = await handlers.match_path("/shop/cart", uow=uow)
    assert (found.route.name, found.forward_path) == ("shop", "/shop/cart")
    with pytest.raises(NotFound, match="no route matches"):
        await handlers.match_path("/nowhere", uow=uow)


# -- a route leads to a service that exists ------------------------------------------------------


async def test_a_route_to_an_unknown_service_is_404(uow: UnitOfWork) -> None:
    for target in ("shop/nothing", "nowhere/orders", "f" * 32):
        data = RouteCreate(name="lost", path="/lost/**", service=target)
        with pytest.raises(NotFound, match="not .*a service Gantry knows"):
            await handlers.create_route(data, by="alice", correlation_id=None, uow=uow)
    await handlers.create_route(ORDERS, by="alice", correlation_id=None, uow=uow)
    with pytest.raises(NotFound, match="POST /api/catalog/projects/shop/services"):
        await handlers.update_route("orders", RouteUpdate(service="shop/nothing"), correlation_id=None, uow=uow)
    assert (await handlers.get_route("orders", uow=uow)).service == "shop/orders"
    assert [e[2]["data"]["change"] for e in await outbox(uow)] == ["created"]


async def test_a_service_id_and_the_platform_services_are_targets_too(uow: UnitOfWork) -> None:
    by_id = RouteCreate(name="ledger", path="/ledger/**", service=service_id_of("bank/ledger"))
    assert (await handlers.create_route(by_id, by="alice", correlation_id=None, uow=uow)).service == by_id.service
    platform = RouteCreate(name="versions", path="/versions/**", service="versioning")
    assert (await handlers.create_route(platform, by="alice", correlation_id=None, uow=uow)).builtin is False
    moved = await handlers.update_route("ledger", RouteUpdate(service="shop/cart"), correlation_id=None, uow=uow)
    assert moved.service == "shop/cart"


async def test_a_deleted_service_is_forgotten_and_stays_forgotten(uow: UnitOfWork) -> None:
    renamed = service_event("shop/orders", "updated")
    await known_services.on_service_changed(renamed, uow=uow)
    await handlers.create_route(ORDERS, by="alice", correlation_id=None, uow=uow)
    await known_services.on_service_changed(service_event("shop/orders", "deleted"), uow=uow)
    await known_services.on_service_created(service_event("shop/orders"), uow=uow)  # late, from another topic
    again = RouteCreate(name="orders-2", path="/orders-2/**", service="shop/orders")
    with pytest.raises(NotFound, match="'shop/orders' is not a service Gantry knows"):
        await handlers.create_route(again, by="alice", correlation_id=None, uow=uow)
    reborn = service_event("shop/orders", service_id=uuid.uuid4().hex)  # the code used again: a new id
    await known_services.on_service_created(reborn, uow=uow)
    assert (await handlers.create_route(again, by="alice", correlation_id=None, uow=uow)).service == "shop/orders"


async def test_a_service_first_heard_of_through_a_change_is_known(uow: UnitOfWork) -> None:
    await known_services.on_service_changed(service_event("bank/audit", "disabled"), uow=uow)
    audit = RouteCreate(name="audit", path="/audit/**", service="bank/audit")
    assert (await handlers.create_route(audit, by="alice", correlation_id=None, uow=uow)).service == "bank/audit"
