"""The consumers' fetch wait adapts (``shared.kafka_transport.AdaptiveWait``): short while records
flow, longer after a few quiet seconds, longest after half a minute of quiet, short again as soon
as a fetch brings records. On the embedded broker every fetch costs the broker and the consumer a
wake-up, so a Gantry nobody uses sleeps; ``gantry up`` sets all three (ADR 2)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gantry.up import EMBEDDED_DEFAULTS
from shared import kafka_transport
from shared.kafka_transport import IDLE_AFTER_SECONDS, SLEEP_AFTER_SECONDS, AdaptiveWait
from shared.settings import Settings
from tests.support import Clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(kafka_transport.time, "monotonic", clock)
    return clock


def _consumer(wait_ms: int) -> Any:
    """What ``AdaptiveWait`` touches of aiokafka's consumer: the wait its fetcher puts in each request."""
    return SimpleNamespace(_fetcher=SimpleNamespace(_fetch_max_wait_ms=wait_ms))


def test_the_wait_grows_with_the_quiet_and_is_short_again_once_records_come(clock: Clock) -> None:
    wait = AdaptiveWait(50, 250, sleep_ms=1000)
    consumer = _consumer(50)
    seen: list[tuple[float, int]] = []
    records_at = clock.now  # made the wait, as records would
    for quiet in (1.0, IDLE_AFTER_SECONDS, 10.0, SLEEP_AFTER_SECONDS - 0.1, SLEEP_AFTER_SECONDS, 120.0):
        clock.now = records_at + quiet
        wait.saw(consumer, records=False)
        seen.append((quiet, consumer._fetcher._fetch_max_wait_ms))
    assert seen == [
        (1.0, 50),
        (IDLE_AFTER_SECONDS, 250),
        (10.0, 250),
        (SLEEP_AFTER_SECONDS - 0.1, 250),
        (SLEEP_AFTER_SECONDS, 1000),
        (120.0, 1000),
    ]
    wait.saw(consumer, records=True)
    assert consumer._fetcher._fetch_max_wait_ms == 50, "the next fetch after records is short again"
    clock.now += IDLE_AFTER_SECONDS
    wait.saw(consumer, records=False)
    assert consumer._fetcher._fetch_max_wait_ms == 250, "the quiet is counted from the last records"


def test_without_a_sleep_wait_the_idle_one_stays(clock: Clock) -> None:
    wait, consumer = AdaptiveWait(500, 0), _consumer(500)  # Settings' defaults: the same wait always
    clock.now += 3_600
    wait.saw(consumer, records=False)
    assert consumer._fetcher._fetch_max_wait_ms == 500
    wait, consumer = AdaptiveWait(50, 250), _consumer(50)
    clock.now += 3_600
    wait.saw(consumer, records=False)
    assert consumer._fetcher._fetch_max_wait_ms == 250


def test_gantry_up_sleeps_deeper_after_half_a_minute_and_other_deployments_choose(tmp_path) -> None:
    assert EMBEDDED_DEFAULTS["GANTRY_KAFKA_FETCH_SLEEP_WAIT_MS"] == "1000"
    settings = Settings(home=tmp_path, secret="s" * 32)
    assert (settings.kafka_fetch_idle_wait_ms, settings.kafka_fetch_sleep_wait_ms) == (0, 0), (
        "Apache Kafka answers a fetch when records come: elsewhere the wait stays as set"
    )
