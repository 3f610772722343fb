"""Integration tier: a broker + database pair per parameter, and service settings built on it."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from shared.events import Envelope, Topic, VersionReleased, new_event
from shared.settings import SERVICES, Settings
from tests.support import SECRET

PAIRS = ["embedded+sqlite", "apache+postgres"]


@pytest.fixture(params=PAIRS)
def service_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for services under test on one of the two real broker/database pairs; each test
    has consumer groups of its own, so no test picks up another's events on the shared brokers."""
    group_prefix = f"t{uuid.uuid4().hex[:8]}"
    if request.param == "embedded+sqlite":
        bootstrap = request.getfixturevalue("embedded_kafka")
        return Settings(
            home=tmp_path,
            kafka_bootstrap=bootstrap,
            secret=SECRET,
            kafka_group_prefix=group_prefix,
            kafka_fetch_max_wait_ms=10,
            kafka_idempotence=False,
            kafka_session_timeout_ms=1000,
        )
    bootstrap = request.getfixturevalue("apache_kafka")
    postgres = request.getfixturevalue("postgres")
    database = f"gantry_{os.urandom(4).hex()}"
    postgres.create_database(database)
    return Settings(
        home=tmp_path,
        kafka_bootstrap=bootstrap,
        secret=SECRET,
        kafka_fetch_max_wait_ms=100,
        kafka_group_prefix=group_prefix,
        kafka_idempotence=True,
        database_url=postgres.url(database),
    )


Publish = Callable[[Envelope], Awaitable[None]]


@pytest.fixture
async def publish(service_settings: Settings) -> AsyncIterator[Publish]:
    producer = AIOKafkaProducer(
        bootstrap_servers=service_settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=service_settings.kafka_idempotence,
    )
    await producer.start()

    async def send(envelope: Envelope) -> None:
        key = envelope.data["service_id"].encode()
        await producer.send_and_wait(envelope.type, envelope.model_dump_json().encode(), key=key)

    yield send
    await producer.stop()


def released(service_id: str, project: str, service: str, version: str, environment: str) -> Envelope:
    data = VersionReleased(
        service_id=service_id,
        project=project,
        service=service,
        environment=environment,
        namespace=f"{project}-{environment}",
        version=version,
        image=f"registry.local/{project}/{service}:{version}",
        trigger="auto",
        by="auto-release",
    )
    return new_event(
        Topic.VERSION_RELEASED,
        data,
        source="gantry/release",
        subject=f"{project}/{service}",
        correlation_id=f"chain-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def ports() -> Iterator[dict[str, socket.socket]]:
    """Bound loopback sockets for one whole block of service ports (port_base .. +4)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + len(SERVICES) > 65000:
            continue
        bound: dict[str, socket.socket] = {}
        try:
            for offset, name in enumerate(SERVICES):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                bound[name] = sock
                sock.bind(("127.0.0.1", base + offset))
        except OSError:
            for sock in bound.values():
                sock.close()
            continue
        yield bound
        for sock in bound.values():
            sock.close()
        return
    raise RuntimeError("no block of free loopback ports found")


@pytest.fixture(params=["sqlite", "postgres"])
def database_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for a service's database alone, on SQLite or on a PostgreSQL database of its own."""
    settings = Settings(home=tmp_path, secret=SECRET)
    if request.param == "postgres":
        postgres = request.getfixturevalue("postgres")
        database = f"gantry_{os.urandom(4).hex()}"
        postgres.create_database(database)
        settings = settings.model_copy(update={"database_url": postgres.url(database)})
    return settings
