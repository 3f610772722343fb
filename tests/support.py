"""Test helpers: run a service in-process, read topics, poll with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI

if TYPE_CHECKING:
    import pytest

from shared.auth import issue_token
from shared.sealing import Keyring, derive_key
from shared.settings import Settings

T = TypeVar("T")
SECRET = "gantry-test-installation-secret-0123456789"
KEYRING = Keyring(derive_key(SECRET))  # what a service started with GANTRY_SECRET=SECRET seals with


class Clock:
    """A monotonic clock a test moves by hand: ``clock.now += 30``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def token(*roles: str, user: str = "alice") -> dict[str, str]:
    """Authorization header for a user with ``roles``."""
    return {"Authorization": f"Bearer {issue_token(SECRET, user, list(roles))}"}


ADMIN = {"Authorization": f"Bearer {issue_token(SECRET, 'root', ['org-admin'])}"}


@asynccontextmanager
async def running(api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start ``api``'s lifespan (database, Kafka, agents) and give an HTTP client to it."""
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 30.0, interval: float = 0.05) -> T:
    """Call ``probe`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


class TopicReader:
    """Reads every record of some topics from the beginning (no consumer group)."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            client_id=f"test-reader-{uuid.uuid4().hex[:6]}",
        )
        self.records: list[tuple[str, bytes | None, dict[str, Any]]] = []

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def wait_for(self, predicate: Callable[[str, dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        """The first record (topic, JSON value) matching ``predicate``, within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for topic, _key, value in self.records:
                if _matches(predicate, topic, value):
                    return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [(t, v.get("type"), v.get("subject")) for t, _, v in self.records]
                raise AssertionError(f"no matching record within {timeout}s; seen: {seen}")
            batch = await self.consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for tp, messages in batch.items():
                for message in messages:
                    try:
                        value = json.loads(message.value)
                    except (TypeError, ValueError):
                        continue  # another test's poison record: not an event to match
                    self.records.append((tp.topic, message.key, value))

    def of_type(self, topic: str) -> list[dict[str, Any]]:
        return [value for t, _k, value in self.records if t == topic]


def _matches(predicate: Callable[[str, dict[str, Any]], bool], topic: str, value: dict[str, Any]) -> bool:
    """Other tests share the topics and some publish odd records: one a predicate cannot read is not a match."""
    try:
        return predicate(topic, value)
    except (KeyError, TypeError, AttributeError):
        return False


@asynccontextmanager
async def serving(api: FastAPI, *sockets: socket.socket, lifespan: Literal["on", "off"] = "on") -> AsyncIterator[None]:
    """Serve ``api`` with uvicorn on already-bound sockets, in a background task."""
    server = uvicorn.Server(uvicorn.Config(api, log_config=None, lifespan=lifespan, access_log=False))
    task = asyncio.create_task(server.serve(sockets=list(sockets)))
    await eventually(lambda: _started(server, task), timeout=60)
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()  # surface the start-up error
        raise AssertionError("the server stopped during start-up")
    return server.started


def settings_of(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a process (container, pod) with ``env`` builds: nothing of this test run leaks in."""
    for key in list(os.environ):
        if key.startswith("GANTRY_") or key == "KUBECONFIG":
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()
