"""Shared pytest fixtures. Servers start on first use and stop at the end of the run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from gantry.embedded_broker import EmbeddedBroker
from tests.harness import PostgresServer, kafka_server, postgres_server


@pytest.fixture(scope="session")
def apache_kafka() -> Iterator[str]:
    """Bootstrap address of an Apache Kafka broker (local process or container)."""
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


from tests.harness.k8s_control_plane import ControlPlane  # noqa: E402  (kept beside its fixture)


@pytest.fixture(scope="session")
def k8s_control_plane() -> Iterator[ControlPlane]:
    """A real Kubernetes control plane (etcd, apiserver, controller-manager, scheduler, kwok) with
    3 fake kwok nodes: ``.kubeconfig`` (path) and ``.server`` (URL). Built and started on first use."""
    with ControlPlane(nodes=3) as plane:
        yield plane
