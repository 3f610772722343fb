"""Benchmark: each service's memory, and every chain, while Pipeline Hooks arrive at a steady rate.

    python -m bench.deploy_memory [--rate 5] [--minutes 10] [--every 30] [--drain 120] [--kafka BOOTSTRAP]

Starts ``gantry up`` in a temporary folder (embedded broker + SQLite unless --kafka is given),
prepares a service with auto-release and auto-deploy on (as ``bench.chain_latency`` does), then
posts ``--rate`` successful Pipeline Hooks per second for ``--minutes`` minutes, each with a
delivery id of its own (``Idempotency-Key``, which the chain carries as its correlation id). Every
``--every`` seconds it prints each process's resident memory (RSS: the five services, and the
embedded broker when there is one) and how many chains have reached a final ``deploy.status``, so a
process whose memory keeps growing shows as a rising column while the others stay flat.

After the load it waits up to ``--drain`` seconds for the last chains, then prints each process's
growth after the warm-up (``bench.measures.memory_growth``), the hooks sent and accepted and the
chains completed, lost, late and duplicated (by correlation id, counted as ``bench.chain_load``
counts them), and, for a soak of 10 minutes or more, the goals beside this run's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.chain_latency import prepare, rss_mb
from bench.chain_load import Completions, drain
from bench.goals import SOAK_MINUTES, goal_table, soak_goals
from bench.measures import FLAT_PERCENT, memory_growth, percentile, table, tally, warm_up_seconds, worst_growth
from bench.running import embedded_broker_pid
from shared.settings import SERVICES
from tests.e2e.stack import Stack, post_pipeline_hook

BROKER = "broker"  # the embedded broker keeps every event in memory: it grows by design, so not counted


@dataclass
class Soak:
    """What one soak measured."""

    seconds: float  # the load's length
    memory: dict[str, list[tuple[float, float]]]  # per process: (seconds into the soak, RSS in MB)
    due: dict[str, float]  # correlation id → when its hook was sent
    accepted: set[str]  # those answered 2xx
    latencies: list[float]
    lost: int
    late: int
    duplicated: int


def watched(stack: Stack) -> dict[str, int]:
    """The processes whose memory the soak samples: the services, and the embedded broker if any."""
    pids = stack.service_pids()
    broker = embedded_broker_pid(stack)
    return {**pids, BROKER: broker} if broker is not None else pids


async def send(api: httpx.AsyncClient, service: dict[str, Any], index: int) -> tuple[str, bool]:
    """One Pipeline Hook with a delivery id of its own; the id and whether it was accepted."""
    correlation_id = f"soak-{index}"
    try:
        await post_pipeline_hook(api, service, 1000 + index, headers={"Idempotency-Key": correlation_id})
    except httpx.HTTPError:
        return correlation_id, False
    return correlation_id, True


async def soak(stack: Stack, rate: float, seconds: float, every: float, longest_drain: float) -> Soak:
    pids = watched(stack)
    memory: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
    print("  time  hooks  completed  " + "  ".join(f"{name:>10}" for name in pids) + "   (RSS, MB)")
    due: dict[str, float] = {}
    accepted: set[str] = set()

    def sample(elapsed: float, completions: Completions) -> None:
        for name, pid in pids.items():
            memory[name].append((elapsed, rss_mb(pid)))
        done = len({cid for cid, _, _ in completions.seen} & accepted)
        columns = "  ".join(f"{memory[name][-1][1]:10.1f}" for name in pids)
        print(f"{elapsed:5.0f}s  {len(due):5d}  {done:9d}  {columns}", flush=True)

    async with stack.client() as api, Completions(stack.bootstrap) as completions:
        service = await prepare(api)
        started = time.monotonic()
        sample(0, completions)
        next_sample = every
        while (elapsed := time.monotonic() - started) < seconds:
            sent = time.monotonic()
            correlation_id, ok = await send(api, service, len(due))
            due[correlation_id] = sent
            if ok:
                accepted.add(correlation_id)
            if elapsed >= next_sample:
                sample(elapsed, completions)
                next_sample += every
            await asyncio.sleep(max(0.0, started + len(due) / rate - time.monotonic()))
        sample(time.monotonic() - started, completions)
        flowing = await drain(completions, accepted, longest_drain)
        latencies, unfinished, duplicated = tally(due, accepted, completions.seen)
    lost, late = (0, unfinished) if flowing else (unfinished, 0)
    return Soak(seconds, memory, due, accepted, latencies, lost, late, duplicated)


def memory_report(memory: dict[str, list[tuple[float, float]]]) -> float:
    """Print each process's growth after the warm-up; the worst service's, in %."""
    warm_up = warm_up_seconds(max((t for samples in memory.values() for t, _ in samples), default=0))
    growths = {name: memory_growth(samples) for name, samples in memory.items()}
    print(f"\nmemory after the first {warm_up:.0f} s (warm-up), least-squares line through the samples:")
    rows = [
        (
            name,
            samples[0][1] if samples else math.nan,
            growths[name].level_mb,
            samples[-1][1] if samples else math.nan,
            growths[name].growth_mb,
            growths[name].percent,
            "no: keeps every event in memory" if name == BROKER else "yes",
        )
        for name, samples in memory.items()
    ]
    headers = ("process", "start MB", "after warm-up MB", "end MB", "growth MB", "growth %", "counted")
    print(table(headers, rows))
    worst = worst_growth(growths, SERVICES)
    print(f"worst service: {worst:.1f} % (flat: ≤ {FLAT_PERCENT:g} %)")
    return worst


def report(result: Soak) -> None:
    worst = memory_report(result.memory)
    print("\nchains over the soak:")
    refused = len(result.due) - len(result.accepted)
    counts = (len(result.due), refused, len(result.latencies), result.lost, result.late, result.duplicated)
    p50, p99 = (1000 * percentile(result.latencies, f) for f in (0.5, 0.99))
    headers = ("sent", "refused", "completed", "lost", "late", "duplicated", "p50 ms", "p99 ms")
    print(table(headers, [(*counts, p50, p99)]))
    minutes = result.seconds / 60
    figures = soak_goals(worst, refused + result.lost + result.late + result.duplicated, minutes)
    if figures:
        print("\nthe goals, beside this run's figures:")
        print(goal_table(figures))
    else:
        print(f"\na {minutes:g}-minute soak: the goals are for {SOAK_MINUTES:g} minutes or more, so not compared")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=5.0, help="Pipeline Hooks per second")
    parser.add_argument("--minutes", type=float, default=SOAK_MINUTES)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between memory samples")
    parser.add_argument("--drain", type=float, default=120, help="longest wait for the last chains after the load")
    parser.add_argument("--kafka", help="bootstrap of an Apache Kafka to use instead of the embedded broker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, Stack(Path(home), kafka_bootstrap=args.kafka) as stack:
        print(f"broker: {stack.kind}; {args.rate:g} hooks/s for {args.minutes:g} min")
        result = asyncio.run(soak(stack, args.rate, args.minutes * 60, args.every, args.drain))
    report(result)


if __name__ == "__main__":
    main()
