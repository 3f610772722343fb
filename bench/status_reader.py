"""A background reader of ``deploy.status`` from its beginning, for benchmarks that watch chains end."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Self

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord


class StatusReader:
    """Reads ``deploy.status`` in the background and hands each fetched batch to :meth:`take`."""

    def __init__(self, bootstrap: str, *, name: str, fetch_wait_ms: int = 500, poll_ms: int = 500) -> None:
        self._poll_ms = poll_ms
        self._consumer = AIOKafkaConsumer(
            "deploy.status",
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_wait_ms,
            client_id=f"bench-{name}-{uuid.uuid4().hex[:6]}",
        )
        self._task: asyncio.Task[None] | None = None

    def take(self, records: list[ConsumerRecord[Any, Any]], now: float) -> None:
        """What a reader keeps of the records one fetch brought (``now``: when they arrived)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=self._poll_ms)
            self.take([record for records in batch.values() for record in records], time.monotonic())
