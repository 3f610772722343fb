"""The process shape shared by every Gantry service: FastAPI and faust agents on one event loop.

``create_service_app`` is the composition root's common half: database, outbox relay, producer,
faust app with the service's subscriptions, health and readiness, error mapping, request ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, Generic, TypeVar, cast

import faust
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from faust.contrib.asgi import faust_app_running
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from shared import api_docs, metrics, problems, tracing
from shared.access import RequestObserver
from shared.audit import AuditTrail, note_principal
from shared.auth import Principal, parse_authorization
from shared.bus import Batches, Handler, Producer, consumer_group, make_faust_app, subscribe
from shared.db import create_tables, make_engine, quick_table_rows, session_factory
from shared.events import ALL_TOPICS
from shared.fast_lane import ServiceAPI
from shared.kafka_admin import create_topics_async
from shared.limits import BodyLimit
from shared.logging import configure_logging, get_logger
from shared.oidc import OidcVerifier, verifier_from_settings
from shared.outbox import OUTBOX_TABLES, OutboxRelay, UnitOfWork, dead_letters
from shared.request_context import RequestContext
from shared.settings import Settings, get_settings

log = get_logger(__name__)
T = TypeVar("T")


@dataclass
class Runtime:
    name: str
    settings: Settings
    engine: AsyncEngine
    uow: UnitOfWork
    producer: Producer
    relay: OutboxRelay
    secret: str
    faust_app: faust.App | None = None
    consumes: list[str] = field(default_factory=list)
    # what else readyz reports (not part of "ready"): name -> async probe, e.g. the cluster
    probes: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    # which drivers readyz names (e.g. deploy's cluster: rendered manifests or Kubernetes, and where)
    drivers: dict[str, dict[str, str]] = field(default_factory=dict)
    # each service's own parts (its SCM, cluster driver, …), set by its extensions: see Part
    parts: dict[str, object] = field(default_factory=dict)


class Part(Generic[T]):
    """A typed key for one of a service's own parts: ``SCM: Part[Scm] = Part("scm")``; an extension
    sets it with ``SCM.provide(runtime, scm)``, a route takes it as ``Annotated[Scm, Depends(SCM)]``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def provide(self, runtime: Runtime, part: T) -> None:
        runtime.parts[self.name] = part

    def of(self, runtime: Runtime) -> T:
        return cast(T, runtime.parts[self.name])

    async def __call__(self, request: Request) -> T:  # async: FastAPI runs a sync dependency in a thread
        return self.of(get_runtime(request))


Subscriptions = Callable[[Runtime], Mapping[str, Handler]]
Extension = Callable[[Runtime], Any]  # returns an async context manager started with the service


def create_service_app(
    name: str,
    *,
    tables: Sequence[type[SQLModel]],
    routers: Sequence[APIRouter],
    subscriptions: Subscriptions | None = None,
    extensions: Sequence[Extension] = (),
    settings: Settings | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        async with run_service(name, tables, subscriptions, extensions, settings) as runtime:
            api.state.runtime = runtime
            yield

    api = ServiceAPI(  # FastAPI, with the webhook's short way through (shared.fast_lane)
        title=f"Gantry {name}",
        lifespan=lifespan,
        version="0.1.0",
        docs_url=None,  # served by shared.api_docs: local Swagger UI assets, the spec relative to the page
        redoc_url=None,
        openapi_url=None,
        generate_unique_id_function=api_docs.operation_id,
    )
    api.state.oidc = verifier_from_settings(settings or get_settings())
    problems.install(api)
    api.add_middleware(AuditTrail, service=name)  # inside the request context: knows the correlation id
    api.add_middleware(RequestContext)
    api.add_middleware(BodyLimit, limit_for=partial(_body_limit, settings or get_settings()))
    api.add_middleware(RequestObserver)  # outermost: logs, times and traces every answer, a 413 too
    api.include_router(_health_router())
    api.include_router(metrics.metrics_router(get_runtime, (settings or get_settings()).metrics_token))
    api.include_router(api_docs.router)
    for router in routers:
        api.include_router(router)
    api_docs.install(api)
    return api


@asynccontextmanager
async def run_service(
    name: str,
    tables: Sequence[type[SQLModel]],
    subscriptions: Subscriptions | None,
    extensions: Sequence[Extension],
    settings: Settings | None,
) -> AsyncIterator[Runtime]:
    settings = settings or get_settings()
    configure_logging(name, settings.log_level)
    metrics.watch_garbage_collections()
    traces = tracing.configure_tracing(name, settings.otlp_endpoint)
    runtime = await build_runtime(name, settings, tables)
    engine, producer = runtime.engine, runtime.producer
    runtime.uow.on_outbox_commit(runtime.relay.wake)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        if traces is not None:
            stack.callback(traces.shutdown)  # last out: exports the spans of the shutdown too
        await create_topics_async(
            settings.require_bootstrap(), list(ALL_TOPICS), settings.kafka_partitions, settings.kafka_replication_factor
        )
        await producer.start()
        stack.push_async_callback(producer.stop)
        runtime.relay.start()
        stack.push_async_callback(runtime.relay.stop)
        for extension in extensions:
            await stack.enter_async_context(extension(runtime))
        if subscriptions is not None:
            runtime.faust_app = make_faust_app(name, settings)
            batches = Batches(runtime.uow, settings.consumer_batch_max)
            for topic, handler in subscriptions(runtime).items():
                subscribe(runtime.faust_app, topic, handler, producer, f"{name}.on_{topic}", batches)
                runtime.consumes.append(str(topic))
            await stack.enter_async_context(faust_app_running(runtime.faust_app, stop_timeout=15))
        log.info("service started", port=settings.port(name))
        yield runtime
        log.info("service stopping")


async def build_runtime(name: str, settings: Settings, tables: Sequence[type[SQLModel]]) -> Runtime:
    """The service's database (its tables made), unit of work, producer (not started) and relay."""
    engine = make_engine(name, settings)
    quick_table_rows([*OUTBOX_TABLES, *tables])
    await create_tables(engine, name, [*OUTBOX_TABLES, *tables])
    sessions = session_factory(engine)
    producer = Producer(settings, service=name)
    return Runtime(
        name=name,
        settings=settings,
        engine=engine,
        uow=UnitOfWork(sessions, source=f"gantry/{name}"),
        producer=producer,
        relay=OutboxRelay(sessions, producer.send_batch, lock_name=f"gantry-outbox-{name}"),
        secret=settings.installation_secret(),
    )


def _body_limit(settings: Settings, path: str) -> tuple[int, str]:
    if path == "/webhooks/gitlab":
        return settings.webhook_max_bytes, "GANTRY_WEBHOOK_MAX_BYTES"
    return settings.request_max_bytes, "GANTRY_REQUEST_MAX_BYTES"


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def oidc_verifier(request: Request) -> OidcVerifier | None:
    """The identity provider's verifier (GANTRY_OIDC_ISSUER), None when Gantry trusts its own tokens only."""
    verifier: OidcVerifier | None = request.app.state.oidc
    return verifier


# declares the bearer scheme in the OpenAPI document (Swagger's "Authorize"); the header itself is
# read by parse_authorization, whose refusals say what is wrong with it
bearer = HTTPBearer(auto_error=False, description="a token from `gantry token issue` or the identity provider")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def current_user(request: Request, _credentials: BearerCredentials) -> Principal:
    header = request.headers.get("authorization")
    principal = await parse_authorization(get_runtime(request).secret, header, oidc_verifier(request))
    structlog.contextvars.bind_contextvars(user=principal.user)
    request.state.user = principal.user  # for the access log line, written outside this task
    note_principal(principal)
    return principal


async def runtime_dependency(request: Request) -> Runtime:
    """``get_runtime`` as a dependency: async, so FastAPI calls it in place, not in a worker thread."""
    return get_runtime(request)


RuntimeDep = Annotated[Runtime, Depends(runtime_dependency)]
CurrentUser = Annotated[Principal, Depends(current_user)]


async def correlation_id(request: Request) -> str:
    chosen: str = request.state.correlation_id
    return chosen


CorrelationId = Annotated[str, Depends(correlation_id)]


def _health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @router.get(
        "/readyz",
        responses={
            200: {"description": "ready", "content": {"application/json": {}}},
            503: {"description": "not ready: `checks` says what is not", "content": {"application/json": {}}},
        },
    )
    async def readyz(runtime: RuntimeDep) -> JSONResponse:
        """Ready when the database answers, the producer is connected and the agents are assigned.

        Also says what is still in flight: outbox rows not yet published, and the topics this
        service consumes with its consumer group, so a supervisor can drain; and any outbox rows
        dead-lettered, with their reason and how many rows of their keys wait behind them."""
        checks = {"database": await _database_ok(runtime.engine), "kafka": runtime.producer.started}
        if runtime.faust_app is not None:
            checks["agents"] = bool(runtime.faust_app.consumer.assignment())
        ready = all(checks.values())
        content = {
            "ready": ready,
            "checks": checks,
            **await _outbox_state(runtime, checks["database"]),
            "consumes": runtime.consumes,
            "group": consumer_group(runtime.name, runtime.settings),
            "reachable": {name: await probe() for name, probe in runtime.probes.items()},
            "drivers": runtime.drivers,
        }
        return JSONResponse(status_code=200 if ready else 503, content=content)

    return router


async def _outbox_state(runtime: Runtime, database_ok: bool) -> dict[str, Any]:
    """What waits in the outbox: rows to publish, rows dead-lettered (with why) and the rows of
    their keys held behind them, until an org admin retries or discards them (``gantry outbox``)."""
    if not database_ok:
        return {"outbox_pending": None, "outbox_held": None, "outbox_dead_letters": None}
    dead = await dead_letters(runtime.uow.sessions, limit=20)
    return {
        "outbox_pending": await runtime.relay.pending(),
        "outbox_held": await runtime.relay.held() if dead else 0,
        "outbox_dead_letters": [
            {"outbox_id": row.outbox_id, "event_id": row.event_id, "topic": row.topic, "reason": row.reason}
            for row in dead
        ],
    }


async def _database_ok(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
