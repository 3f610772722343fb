"""``python -m services.<name>``: serve one service with uvicorn on its port (loopback by default)."""

from __future__ import annotations

import gc
import socket

import uvicorn
from fastapi import FastAPI

from shared.settings import get_settings


class ServiceServer(uvicorn.Server):
    """uvicorn's server, which settles the heap once its service has started (``settle_heap``)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            settle_heap()


YOUNG_THRESHOLD = 10_000  # Python's is 700


def settle_heap() -> None:
    """Collect once, then move every object the started service holds (its modules, routes,
    mappers, settings: about 180,000) out of the garbage collector's sight (``gc.freeze``).
    Its oldest generation was collected every second or two under load, each time walking all of
    them: pauses of 50–600 ms that every request and event in flight waited out, the webhook
    door's p99. What the service allocates from then on is collected as before, its youngest
    generation once 10,000 objects more were made than freed instead of 700: the requests in
    flight alone crossed 700 about 200 times a second, for almost nothing to collect."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def serve(api: FastAPI, service: str, server_class: type[uvicorn.Server] = ServiceServer) -> None:
    settings = get_settings()
    config = uvicorn.Config(
        api,
        host=settings.host,
        port=settings.port(service),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server_class(config).run()
