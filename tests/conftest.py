"""Shared pytest fixtures. Servers start on first use and stop at the end of the run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

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
