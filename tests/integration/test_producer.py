"""The services' producer on real brokers: what each broker takes, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.versioning.app import create_app as create_versioning
from shared.bus import Producer
from shared.settings import Settings
from tests.support import SECRET, running

pytestmark = pytest.mark.integration


async def test_a_broker_that_refuses_idempotent_producers_is_detected(embedded_kafka: str, tmp_path: Path) -> None:
    # The embedded broker answers InitProducerId with UnknownError: warn and go on without idempotence.
    settings = Settings(home=tmp_path, kafka_bootstrap=embedded_kafka, secret=SECRET, kafka_idempotence=True)
    producer = Producer(settings)
    await producer.start()
    try:
        assert producer.started and producer.idempotent is False
        assert await producer.send_batch([("service.created.dlq", "k", b"{}")]) == [None]
    finally:
        await producer.stop()


async def test_a_service_starts_on_such_a_broker_with_idempotence_asked_for(
    embedded_kafka: str, tmp_path: Path
) -> None:
    settings = Settings(
        home=tmp_path,
        kafka_bootstrap=embedded_kafka,
        secret=SECRET,
        kafka_idempotence=True,
        kafka_fetch_max_wait_ms=10,
        kafka_session_timeout_ms=1000,
    )
    async with running(create_versioning(settings)) as versioning:
        assert (await versioning.get("/healthz")).status_code == 200


async def test_apache_kafka_takes_idempotent_producers(apache_kafka: str, tmp_path: Path) -> None:
    producer = Producer(Settings(home=tmp_path, kafka_bootstrap=apache_kafka, secret=SECRET, kafka_idempotence=True))
    await producer.start()
    try:
        assert producer.idempotent is True
    finally:
        await producer.stop()
