"""faust's aiokafka transport with the consumer's fetch wait as a Gantry setting.

faust-streaming builds its worker consumer with ``fetch_max_wait_ms=1500`` hard-coded. Apache
Kafka answers a fetch as soon as data arrives, so there it costs nothing; the embedded broker
holds every fetch for the full wait, so each hop would take up to 1.5 s. This transport is
registered by ``shared.bus`` under the ``gantry://`` broker scheme and applies
``GANTRY_KAFKA_FETCH_MAX_WAIT_MS`` (kept on the app by ``shared.bus.make_faust_app``) to the
consumer before it starts.
"""

from __future__ import annotations

from typing import ClassVar

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher, so setting it here is enough.
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = wait_ms
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar = Consumer
