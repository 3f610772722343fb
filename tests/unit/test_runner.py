"""A service's server settles its heap once the service has started (``shared.runner``)."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest
import uvicorn
import uvloop
from starlette.types import Receive, Scope, Send

from shared import runner
from shared.runner import YOUNG_THRESHOLD, ServiceServer


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def server() -> ServiceServer:
    """A server as ``uvicorn.Server.serve`` prepares one before its startup."""
    config = uvicorn.Config(hello, host="127.0.0.1", port=0, lifespan="off", log_config=None)
    config.load()
    made = ServiceServer(config)
    made.lifespan = config.lifespan_class(config)
    return made


async def test_a_started_service_keeps_what_it_holds_out_of_the_collectors_sight() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    started = server()
    await started.startup()
    try:
        held = gc.get_freeze_count()
        assert held > 10_000, held  # the modules, classes and functions loaded so far
        gc.collect()  # collections after it leave them alone
        assert gc.get_freeze_count() == held
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *thresholds[1:])
    finally:
        await started.shutdown()
        gc.unfreeze()  # the tests that follow share this process
        gc.set_threshold(*thresholds)


async def test_a_server_told_to_stop_while_starting_freezes_nothing() -> None:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    stopping = server()
    stopping.should_exit = True
    await stopping.startup()
    try:
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == thresholds
    finally:
        await stopping.shutdown()


async def test_a_waiting_server_stops_as_soon_as_another_thread_tells_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "TICK_SECONDS", 3600.0)  # its next tick is an hour away
    waiting = server()
    looping = asyncio.create_task(waiting.main_loop())
    await asyncio.sleep(0.05)
    assert not looping.done()
    threading.Thread(target=setattr, args=(waiting, "should_exit", True)).start()
    await asyncio.wait_for(looping, timeout=10)
    assert waiting.should_exit


async def test_a_server_refreshes_its_date_header_at_each_of_its_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "TICK_SECONDS", 0.01)
    ticked = server()
    counters: list[int] = []
    real_tick = ticked.on_tick

    async def on_tick(counter: int) -> bool:
        counters.append(counter)
        if len(counters) == 3:
            ticked.should_exit = True
        return await real_tick(counter)

    ticked.on_tick = on_tick  # type: ignore[method-assign]
    await asyncio.wait_for(ticked.main_loop(), timeout=10)
    assert counters == [0, 0, 0]  # uvicorn refreshes its Date header on ticks whose counter divides by 10
    assert b"date" in dict(ticked.server_state.default_headers)


def test_a_service_runs_the_loop_of_fausts_consumer_thread_on_uvloop() -> None:
    """faust's consumer thread makes its loop with ``asyncio.new_event_loop``: once the service
    has set the policy, that loop is uvloop's too, as uvicorn's is."""
    from mode.threads import ServiceThread

    before = asyncio.get_event_loop_policy()
    parent = asyncio.new_event_loop()
    try:
        assert not isinstance(parent, uvloop.Loop)  # the standard library's, as a thread made it before
        runner.every_loop_on_uvloop()
        asyncio.set_event_loop(parent)
        consumer_thread = ServiceThread(loop=parent)
        assert isinstance(consumer_thread.thread_loop, uvloop.Loop)
        consumer_thread.thread_loop.close()
    finally:
        asyncio.set_event_loop_policy(before)
        asyncio.set_event_loop(None)
        parent.close()
