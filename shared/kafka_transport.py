"""faust's aiokafka transport with the consumer's fetch wait as a Gantry setting, adapting to load.

faust-streaming builds its worker consumer with ``fetch_max_wait_ms=1500`` hard-coded. Apache
Kafka answers a fetch as soon as data arrives, so there it costs nothing; the embedded broker
holds every fetch for the full wait, so each hop would take up to 1.5 s. This transport is
registered by ``shared.bus`` under the ``gantry://`` broker scheme and applies
``GANTRY_KAFKA_FETCH_MAX_WAIT_MS`` (kept on the app by ``shared.bus.make_faust_app``) to the
consumer before it starts.

On the embedded broker that short wait is also what an idle service pays: one fetch, and one
wake-up of the consumer's thread and of the broker, every wait. So the wait adapts
(``AdaptiveWait``): the short one while records flow, ``GANTRY_KAFKA_FETCH_IDLE_WAIT_MS`` once a
consumer has seen nothing for ``IDLE_AFTER_SECONDS``, and ``GANTRY_KAFKA_FETCH_SLEEP_WAIT_MS``
(when set) once it has seen nothing for ``SLEEP_AFTER_SECONDS``; the first record after a quiet
spell waits up to the long one, and the next fetch is short again.

A consumer stopped while the broker is away stops cleanly too (``ConsumerThread.on_thread_stop``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

from shared.bus import being_cancelled, close_client
from shared.logging import get_logger

log = get_logger(__name__)

IDLE_AFTER_SECONDS = 3.0
SLEEP_AFTER_SECONDS = 30.0


class AdaptiveWait:
    """A consumer's fetch wait: ``short_ms`` while records flow, ``idle_ms`` after a quiet spell of
    ``idle_after`` seconds, and ``sleep_ms`` (when given) after ``sleep_after`` seconds of quiet."""

    def __init__(
        self,
        short_ms: int,
        idle_ms: int | None,
        idle_after: float = IDLE_AFTER_SECONDS,
        *,
        sleep_ms: int | None = None,
        sleep_after: float = SLEEP_AFTER_SECONDS,
    ) -> None:
        self.short_ms, self.idle_ms = short_ms, idle_ms or short_ms
        self.sleep_ms = sleep_ms or self.idle_ms
        self.idle_after, self.sleep_after = idle_after, sleep_after
        self.last_records = time.monotonic()
        self.current_ms = short_ms

    def saw(self, consumer: aiokafka.AIOKafkaConsumer, records: bool) -> None:
        """After a fetch came back: set the wait the next fetch request carries."""
        now = time.monotonic()
        if records:
            self.last_records, wait = now, self.short_ms
        elif now - self.last_records >= self.sleep_after:
            wait = self.sleep_ms
        elif now - self.last_records >= self.idle_after:
            wait = self.idle_ms
        else:
            return
        fetcher = getattr(consumer, "_fetcher", None)  # read each time aiokafka builds a request
        if fetcher is not None and wait != self.current_ms:
            fetcher._fetch_max_wait_ms = self.current_ms = wait


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    _wait: AdaptiveWait | None = None

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher, so setting it here is enough.
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = wait_ms
            self._wait = AdaptiveWait(
                wait_ms,
                getattr(self.app, "fetch_idle_wait_ms", None),
                sleep_ms=getattr(self.app, "fetch_sleep_wait_ms", None),
            )
        return consumer

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout, max_records=max_records)
        if self._wait is not None:
            self._wait.saw(consumer, bool(records))
        return records

    async def on_thread_stop(self) -> None:
        """Stop the consumer, also while the broker is away.

        aiokafka's fetcher (0.14) cancels the fetch it is retrying against a broker it cannot reach
        and then awaits it without catching the ``CancelledError`` that follows; that error left
        ``AIOKafkaConsumer.stop`` before it closed its client, killed this thread with a traceback
        and left the client's metadata task pending. Unless this task is itself being cancelled,
        the error is taken for what it is and the client is closed here."""
        try:
            await super().on_thread_stop()
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            log.info("kafka consumer stopped while the broker was away")
            if self._consumer is not None:
                await close_client(self._consumer)


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar = Consumer
