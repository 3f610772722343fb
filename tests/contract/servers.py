"""Each service's real app, served over HTTP from this process, on a real SQLite database.

The app is the one ``create_app`` builds; only its lifespan differs from production: no broker (so
no consumer and no relay: what a request emits stays in the outbox, as it would while Kafka is
away), the service's own extensions otherwise (deploy's keyring and rendered-manifests cluster
driver, catalog's local git host, the gateway's built-in routes).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlmodel import SQLModel

from services.catalog import app as catalog_app
from services.deploy import app as deploy_app
from services.deploy import ingresses, rotation
from services.deploy.models import DEPLOY_TABLES
from services.gateway import app as gateway_app
from services.gateway import proxy
from services.gateway.events_stream import EVENTS, EventStream
from services.release import app as release_app
from services.versioning import app as versioning_app
from shared.service import Extension, Runtime, build_runtime
from shared.settings import Settings
from tests.support import SECRET


@asynccontextmanager
async def _idle_event_stream(runtime: Runtime) -> AsyncIterator[None]:
    """The gateway's event stream, never started: no broker here, so no events (and none recent)."""
    EVENTS.provide(runtime, EventStream("127.0.0.1:9", runtime.settings.kafka_fetch_max_wait_ms))
    yield


@dataclass(frozen=True)
class Shape:
    create_app: Callable[[Settings], FastAPI]
    tables: Sequence[type[SQLModel]]
    extensions: Sequence[Extension]


SHAPES: dict[str, Shape] = {
    "catalog": Shape(catalog_app.create_app, catalog_app.TABLES, [catalog_app._scm]),
    "versioning": Shape(versioning_app.create_app, versioning_app.TABLES, []),
    "release": Shape(release_app.create_app, release_app.TABLES, [release_app._announce_environments]),
    "deploy": Shape(
        deploy_app.create_app, DEPLOY_TABLES, [rotation.sealing, deploy_app._cluster, ingresses.ingress_sync]
    ),
    "gateway": Shape(
        gateway_app.create_app,
        gateway_app.TABLES,
        [proxy.http_client, gateway_app._builtin_routes, _idle_event_stream],
    ),
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _app(name: str, home: Path) -> FastAPI:
    shape = SHAPES[name]
    # a broker address nothing listens on: nothing here connects to it (no consumer, no relay)
    settings = Settings(home=home, secret=SECRET, kafka_bootstrap="127.0.0.1:9")
    api = shape.create_app(settings)

    @asynccontextmanager
    async def lifespan(_api: Any) -> AsyncIterator[None]:
        # its producer is never started: what a request emits waits in the outbox
        runtime = await build_runtime(name, settings, shape.tables)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(runtime.engine.dispose)
            stack.push_async_callback(runtime.producer.stop)  # closes the client it made, never connected
            for extension in shape.extensions:
                await stack.enter_async_context(extension(runtime))
            api.state.runtime = runtime
            yield

    api.router.lifespan_context = lifespan
    return api


@contextmanager
def serving(name: str, home: Path) -> Iterator[str]:
    """The service ``name`` listening on a free loopback port; yields its base URL."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(_app(name, home), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"{name}-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {name} service did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
