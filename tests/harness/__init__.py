"""Real servers for Gantry's tests: local processes, or testcontainers where Docker runs.

``GANTRY_TEST_SERVERS`` picks the kind: ``containers``, ``local``, or ``auto`` (the default),
which uses containers only when a Docker engine answers ``docker info``.
"""

from __future__ import annotations

import os
import subprocess
from functools import cache
from typing import Protocol

from tests.harness.kafka_server import ApacheKafka
from tests.harness.postgres_server import LocalPostgres

KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
POSTGRES_IMAGE = "postgres:16-alpine"


class KafkaServer(Protocol):
    bootstrap: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


class PostgresServer(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def url(self, database: str = "postgres") -> str: ...
    def create_database(self, name: str) -> None: ...


def use_containers() -> bool:
    """Whether to run servers in containers, from ``GANTRY_TEST_SERVERS``."""
    choice = os.environ.get("GANTRY_TEST_SERVERS", "auto")
    if choice not in ("auto", "containers", "local"):
        raise ValueError(f"GANTRY_TEST_SERVERS={choice!r}: use auto, containers or local")
    return choice == "containers" or (choice == "auto" and _docker_answers())


@cache
def _docker_answers() -> bool:
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def kafka_server() -> KafkaServer:
    """An Apache Kafka broker, not yet started."""
    return ContainerKafka() if use_containers() else ApacheKafka()


def postgres_server() -> PostgresServer:
    """A PostgreSQL server, not yet started."""
    return ContainerPostgres() if use_containers() else LocalPostgres()


class ContainerKafka:
    """Kafka (KRaft) in a container, configured like the local ApacheKafka."""

    def __init__(self) -> None:
        from testcontainers.community.kafka import KafkaContainer

        self._container = (
            KafkaContainer(KAFKA_IMAGE)
            .with_kraft()
            .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true")
            .with_env("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", "500")
        )
        self.bootstrap = ""

    def start(self) -> None:
        self._container.start()
        self.bootstrap = self._container.get_bootstrap_server()

    def stop(self) -> None:
        self._container.stop()


class ContainerPostgres:
    """PostgreSQL in a container, with the same helpers as LocalPostgres."""

    def __init__(self) -> None:
        from testcontainers.community.postgres import PostgresContainer

        self._container = PostgresContainer(POSTGRES_IMAGE, username="postgres", password="postgres", dbname="postgres")

    def start(self) -> None:
        self._container.start()

    def stop(self) -> None:
        self._container.stop()

    def url(self, database: str = "postgres") -> str:
        host = self._container.get_container_host_ip()
        port = self._container.get_exposed_port(5432)
        return f"postgresql+asyncpg://postgres:postgres@{host}:{port}/{database}"

    def create_database(self, name: str) -> None:
        result = self._container.exec(["createdb", "-U", "postgres", name])
        if result.exit_code != 0:
            raise RuntimeError(f"createdb {name} failed: {result.output!r}")
