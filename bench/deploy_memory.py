"""Benchmark: each service's memory while Pipeline Hooks arrive at a steady rate.

    python -m bench.deploy_memory [--rate 5] [--minutes 5] [--every 30] [--kafka BOOTSTRAP]

Starts ``gantry up`` in a temporary folder (embedded broker + SQLite unless --kafka is given),
prepares a service with auto-release and auto-deploy on (as ``bench.chain_latency`` does), then
posts ``--rate`` successful Pipeline Hooks per second for ``--minutes`` minutes. Every
``--every`` seconds it prints each service's resident memory (RSS) and how many ``deploy.status``
events the chain has produced so far, so a service whose memory keeps growing shows as a rising
column while the others stay flat.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.chain_latency import prepare, rss_mb
from bench.status_reader import StatusReader
from shared.settings import SERVICES
from tests.e2e.stack import Stack, post_pipeline_hook


class StatusCounter(StatusReader):
    """Counts ``deploy.status`` events in the background, keeping none of them."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap, name="counter")
        self.count = 0

    def take(self, records: list[Any], _now: float) -> None:
        self.count += len(records)


async def soak(stack: Stack, rate: float, seconds: float, every: float) -> None:
    pids = stack.service_pids()
    print("  time  hooks  deploy.status  " + "  ".join(f"{name:>10}" for name in SERVICES) + "   (RSS, MB)")

    def sample(elapsed: float, hooks: int, statuses: int) -> None:
        memory = "  ".join(f"{rss_mb(pids[name]) if name in pids else 0:10.1f}" for name in SERVICES)
        print(f"{elapsed:5.0f}s  {hooks:5d}  {statuses:13d}  {memory}", flush=True)

    async with stack.client() as api, StatusCounter(stack.bootstrap) as statuses:
        service = await prepare(api)
        started = time.monotonic()
        sample(0, 0, statuses.count)
        next_sample, hooks = every, 0
        while (elapsed := time.monotonic() - started) < seconds:
            await post_pipeline_hook(api, service, 1000 + hooks)
            hooks += 1
            if elapsed >= next_sample:
                sample(elapsed, hooks, statuses.count)
                next_sample += every
            await asyncio.sleep(max(0.0, started + hooks / rate - time.monotonic()))
        sample(time.monotonic() - started, hooks, statuses.count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=5.0, help="Pipeline Hooks per second")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between memory samples")
    parser.add_argument("--kafka", help="bootstrap of an Apache Kafka to use instead of the embedded broker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, Stack(Path(home), kafka_bootstrap=args.kafka) as stack:
        print(f"broker: {stack.kind}; {args.rate:g} hooks/s for {args.minutes:g} min")
        asyncio.run(soak(stack, args.rate, args.minutes * 60, args.every))


if __name__ == "__main__":
    main()
