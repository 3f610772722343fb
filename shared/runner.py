"""``python -m services.<name>``: serve one service with uvicorn on its port (loopback by default)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket

import uvicorn
import uvloop
from fastapi import FastAPI

from shared.settings import get_settings

TICK_SECONDS = 1.0  # uvicorn's is 0.1: ten wake-ups a second for an idle service


class ServiceServer(uvicorn.Server):
    """uvicorn's server, which settles the heap once its service has started (``settle_heap``) and
    looks at its clock once a second, not ten times: told to stop, it stops at once all the same."""

    _exit_wanted = False
    _woken: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def should_exit(self) -> bool:
        return self._exit_wanted

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        """Set by uvicorn's signal handler, or by whoever stops the server from another thread:
        wake ``main_loop`` instead of leaving it to notice at its next tick."""
        self._exit_wanted = value
        if value and self._loop is not None and self._woken is not None:
            with contextlib.suppress(RuntimeError):  # its loop has closed: nothing left to wake
                self._loop.call_soon_threadsafe(self._woken.set)

    async def main_loop(self) -> None:
        """uvicorn's loop, a tick a second: each tick refreshes the Date header (uvicorn does so on
        every tenth of its 0.1 s ticks) and answers whether to stop."""
        self._loop, self._woken = asyncio.get_running_loop(), asyncio.Event()
        while not await self.on_tick(0):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), TICK_SECONDS)

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


def every_loop_on_uvloop() -> None:
    """Make every event loop the process creates a uvloop one, not only uvicorn's.

    uvicorn runs the service on uvloop by itself; faust runs its Kafka consumer on a thread of its
    own, with a loop made by ``asyncio.new_event_loop``, which was the standard library's. That
    thread fetches and heartbeats all day: an idle service spent about two thirds of its CPU there,
    and an idle Gantry took 9.2 % of one core with it on asyncio's loop, 7.8–8.0 % on uvloop (ADR 2)."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(api: FastAPI, service: str, server_class: type[uvicorn.Server] = ServiceServer) -> None:
    settings = get_settings()
    every_loop_on_uvloop()
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
