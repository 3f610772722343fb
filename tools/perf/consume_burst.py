"""One consumer's capacity: how fast versioning applies a burst of `service.created` events.

    python tools/perf/consume_burst.py [N]      (default 2000; run from the repository's root)

Starts the embedded broker and versioning (SQLite) in this process, sends N events (N keys, so
every partition), and prints the time until all are applied and the process's CPU per event
(the producer's share included).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer
from sqlalchemy import func
from sqlmodel import select

sys.path.insert(0, os.getcwd())
from gantry.embedded_broker import EmbeddedBroker  # noqa: E402
from services.versioning.app import create_app  # noqa: E402
from services.versioning.models import KnownService  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.integration.test_consume_batches import _created  # noqa: E402
from tests.support import SECRET, running  # noqa: E402


async def burst(bootstrap: str, home: str, count: int) -> None:
    settings = Settings(
        home=Path(home),
        kafka_bootstrap=bootstrap,
        secret=SECRET,
        kafka_fetch_max_wait_ms=10,
        kafka_idempotence=False,
        kafka_session_timeout_ms=1000,
    )
    api = create_app(settings)
    async with running(api):
        runtime = api.state.runtime
        await asyncio.sleep(3)  # the group joined
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        cpu, started = time.process_time(), time.monotonic()
        for n in range(count):
            service_id = f"s{n:06d}"
            await producer.send("service.created", _created(service_id), key=service_id.encode())
        await producer.flush()
        await producer.stop()
        applied = 0
        while applied < count:
            await asyncio.sleep(0.05)
            async with runtime.uow.sessions() as session:
                applied = int((await session.exec(select(func.count()).select_from(KnownService))).one())
        took = time.monotonic() - started
        per_event = (time.process_time() - cpu) / count * 1000
        rate = count / took
        print(f"{count} service.created applied in {took:.2f} s = {rate:.0f}/s; {per_event:.2f} ms CPU per event")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    broker = EmbeddedBroker()
    broker.start()
    try:
        with tempfile.TemporaryDirectory() as home:
            asyncio.run(burst(broker.bootstrap, home, count))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
