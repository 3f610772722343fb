"""Shared pytest fixtures. Servers start on first use and stop at the end of the run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.pool import Pool

from gantry.embedded_broker import EmbeddedBroker
from tests.harness import PostgresServer, kafka_server, postgres_server
from tests.harness.k8s_control_plane import ControlPlane


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their settings themselves: a developer's GANTRY_* or KUBECONFIG must not leak in."""
    import os

    for name in list(os.environ):
        if name.startswith("GANTRY_") or name == "KUBECONFIG":
            monkeypatch.delenv(name)


class SecondConnections:
    """Pooled connections a task took while it held one from the same pool already. Such a task
    can wait for the second while others hold the rest of the pool waiting for what the first one
    holds (SQLite's write lock, a row's lock): deploy once stalled for 30 s that way (ADR 17,
    "Revisited: every writer takes the turn")."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.taken: dict[tuple[int, asyncio.Task[Any]], list[Any]] = {}  # by pool and task: what it holds

    def checkout(self, _dbapi_connection: Any, record: Any, proxy: Any) -> None:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop: a synchronous engine
            return
        if task is None:
            return
        held = self.taken.setdefault((id(proxy._pool), task), [])
        if held:
            self.found.append(_awaiting(task))
        held.append(record)
        record.info["gantry_taken_by"] = (id(proxy._pool), task)

    def checkin(self, _dbapi_connection: Any, record: Any) -> None:
        key = record.info.pop("gantry_taken_by", None)
        if key is not None and record in self.taken.get(key, []):
            self.taken[key].remove(record)
            if not self.taken[key]:
                del self.taken[key]


def _awaiting(task: asyncio.Task[Any]) -> str:
    """Where ``task`` is, from its outermost coroutine in: Gantry's frames and the tests'."""
    frames, coroutine = [], task.get_coro()
    while coroutine is not None:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "ag_frame", None)
        if frame is not None and any(
            part in frame.f_code.co_filename for part in ("/shared/", "/services/", "/tests/")
        ):
            where = "/".join(frame.f_code.co_filename.rsplit("/", 2)[-2:])
            frames.append(f"{where}:{frame.f_lineno} {frame.f_code.co_name}")
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "ag_await", None)
    return " -> ".join(frames) or repr(task)


SECOND_CONNECTIONS = SecondConnections()
event.listen(Pool, "checkout", SECOND_CONNECTIONS.checkout)
event.listen(Pool, "checkin", SECOND_CONNECTIONS.checkin)


@pytest.fixture(autouse=True)
def one_connection_per_task(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test in which a task took a second pooled connection while it held one, unless the
    test is marked ``second_connection`` (it does so on purpose)."""
    SECOND_CONNECTIONS.found.clear()
    yield
    found, SECOND_CONNECTIONS.found[:] = list(SECOND_CONNECTIONS.found), []
    if found and request.node.get_closest_marker("second_connection") is None:
        pytest.fail("a task took a second pooled connection while it held one:\n" + "\n".join(found))


@pytest.fixture(scope="session")
def apache_kafka() -> Iterator[str]:
    """Bootstrap address of an Apache Kafka broker (local process or container)."""
    with started_kafka() as bootstrap:
        yield bootstrap


@contextmanager
def started_kafka() -> Iterator[str]:
    """An Apache Kafka broker of its own, started, stopped on leaving: its bootstrap address."""
    server = kafka_server()
    server.start()
    try:
        yield server.bootstrap
    finally:
        server.stop()


@pytest.fixture(scope="session")
def embedded_kafka() -> Iterator[str]:
    """Bootstrap address of the embedded Tansu broker that `gantry up` runs."""
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server: ``.url(database)`` and ``.create_database(name)``."""
    server = postgres_server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unique_id() -> str:
    """A short random hex string for per-test topic, group and database names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def k8s_control_plane() -> Iterator[ControlPlane]:
    """A real Kubernetes control plane (etcd, apiserver, controller-manager, scheduler, kwok) with
    3 fake kwok nodes: ``.kubeconfig`` (path) and ``.server`` (URL). Built and started on first use."""
    with ControlPlane(nodes=3) as plane:
        yield plane
