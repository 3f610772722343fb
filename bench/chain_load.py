"""Benchmark: the whole chain under open-loop load, Pipeline Hook → ``deploy.status``.

    python -m bench.chain_load [--services 10] [--rates 20,50,100] [--seconds 20] [--idle 10]
                               [--drain 120] [--rest 35] [--kafka] [--postgres]

Starts ``gantry up`` (embedded broker + SQLite; ``--kafka`` and ``--postgres`` start Apache Kafka
and PostgreSQL from the test harness instead), prepares ``--services`` services released to one
environment with auto-release and auto-deploy on (as ``bench.chain_latency`` does), measures every
process's CPU while idle for ``--idle`` seconds, then for each rate sends successful Pipeline Hooks
through the gateway at that rate for ``--seconds``, round-robin over the services. The client is
open-loop: each hook leaves at its scheduled time whatever the earlier ones are doing, and its
latency counts from that time, so a slow chain shows as latency instead of as fewer hooks sent.
It sends them with ``bench.hook_client`` (plain HTTP/1.1 over keep-alive connections), which costs
the cores it shares with Gantry far less than httpx did.

Per rate it prints: hooks offered and accepted (202), p50/p95/p99 from the hook's due time to the
publication of its final ``deploy.status`` (the record's timestamp, which deploy's producer sets as
it sends it; the reader fetches every 250 ms, and how long it takes to read a status back is the
reader's time, not Gantry's), chains lost (accepted but no
``deploy.status`` by the end of the whole benchmark, which waits once more after the last rate),
late (completed only after their rate's wait, which ends ``--drain`` seconds after the last hook
or once no chain completed for 15 s: a backlog, not a loss; their latencies are left out), duplicated (two
distinct ``deploy.status`` events for one hook), the chains completed per second, and the CPU time per
chain of each process (services, broker and, with ``--postgres``, PostgreSQL's server with the
process it runs per connection; from ``/proc/<pid>/stat``, each with what it started; idle burn
included). Then, ``--rest`` seconds after the load, each process's idle CPU again, at rest: the
consumers have seen no record for longer than they take to fetch with their longest wait
(``shared.kafka_transport.SLEEP_AFTER_SECONDS``). The idle goal is compared with that one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.chain_latency import prepare
from bench.goals import RateFigures, chain_goals, goal_table
from bench.hook_client import HookClient
from bench.measures import (
    cpu_snapshot,
    cpu_used,
    histogram_totals,
    mean_hops,
    percentile,
    send_times,
    table,
    tally,
)
from bench.running import Running, add_stack_options, running_stack
from bench.status_reader import StatusReader
from shared.auth import webhook_secret
from shared.kafka_transport import SLEEP_AFTER_SECONDS
from shared.settings import SERVICES
from tests.e2e.stack import Stack, success_hook
from tests.support import SECRET

FINAL_STATES = frozenset({"rendered", "succeeded", "failed"})
QUIET_SECONDS = 15.0  # no chain completed for this long: the ones still missing are lost
PROCESSES = ("gateway", "catalog", "versioning", "release", "deploy", "broker", "postgres")
# the chain's hops in order: the service that acts on each event, and its topic
HOPS = (
    ("versioning", "gitlab.hook.received"),
    ("versioning", "pipeline.succeeded"),
    ("release", "version.created"),
    ("deploy", "version.released"),
    ("deploy", "deploy.requested"),
    ("catalog", "deploy.status"),
)


class Completions(StatusReader):
    """Reads ``deploy.status`` in the background and notes when each chain's final state was published."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap, name="chain", fetch_wait_ms=250, poll_ms=500)
        self.seen: list[tuple[str, str, float]] = []  # (correlation id, event id, monotonic time)
        self.others: list[dict[str, Any]] = []  # deploy.status events in no final state, to tell why

    def take(self, records: list[Any], now: float) -> None:
        wall_to_monotonic = now - time.time()
        for record in records:
            event = json.loads(record.value or b"{}")
            if (event.get("data") or {}).get("state") in FINAL_STATES:
                published = record.timestamp / 1000 + wall_to_monotonic if record.timestamp > 0 else now
                self.seen.append((event.get("correlation_id") or "", event.get("id") or "", min(published, now)))
            else:
                self.others.append(event)


@dataclass
class RateResult:
    rate: float
    offered: int
    accepted: int
    latencies: list[float]
    lost: int
    late: int
    duplicated: int
    seconds: float  # first hook due → last chain completed
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process
    due: dict[str, float] = field(default_factory=dict)  # when each hook was due to leave
    accepted_ids: set[str] = field(default_factory=set)
    hops: dict[tuple[str, str], float] = field(default_factory=dict)  # (service, topic): mean hop, seconds
    # (service, "topic, way" or "outbox relay"): batches (relay cycles) per second, mean events (rows) in each
    batches: BatchSizes = field(default_factory=dict)

    def settle(self, seen: list[tuple[str, str, float]]) -> None:
        """Once the whole benchmark is over: the chains counted lost after this rate's wait that
        completed later (during a later rate's, or the final wait) are late, not lost."""
        _latencies, unfinished, duplicated = tally(self.due, self.accepted_ids, seen)
        missing = self.lost + self.late
        self.lost, self.late, self.duplicated = unfinished, missing - unfinished, duplicated


# At most this many hooks in flight, each on a keep-alive connection of its own (bench.hook_client)
CONNECTIONS = 512


async def offer(
    client: HookClient, services: list[dict[str, Any]], rate: float, seconds: float, run: int
) -> tuple[dict[str, float], set[str]]:
    """Send the hooks open-loop; the due time of each (by correlation id), and those answered 202."""
    due: dict[str, float] = {}
    tasks: list[asyncio.Task[tuple[str, int]]] = []
    start = time.monotonic() + 0.05
    for index, offset in enumerate(send_times(rate, seconds)):
        delay = start + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        correlation_id = f"bench-{run}-{index}"
        due[correlation_id] = start + offset
        service = services[index % len(services)]
        pipeline_id = (run + 1) * 1_000_000 + index
        tasks.append(asyncio.create_task(_post(client, service, pipeline_id, correlation_id)))
    answers = await asyncio.gather(*tasks)
    return due, {cid for cid, status in answers if status == 202}


async def _post(client: HookClient, service: dict[str, Any], pipeline_id: int, correlation_id: str) -> tuple[str, int]:
    body = json.dumps(success_hook(service, pipeline_id)).encode()
    headers = {
        "X-Gitlab-Event": "Pipeline Hook",
        "X-Gitlab-Token": webhook_secret(SECRET, service["scm_project_id"]),
        # the delivery id: versioning correlates the chain that follows with it
        "Idempotency-Key": correlation_id,
    }
    return correlation_id, await client.post("/webhooks/gitlab", body, headers)


async def run_rate(
    running: Running,
    client: HookClient,
    admin: httpx.AsyncClient,
    completions: Completions,
    services: list[dict[str, Any]],
    rate: float,
    args: argparse.Namespace,
    run: int,
) -> RateResult:
    pids = running.pids()
    scraped_before = await scrape_metrics(admin, running.stack)
    before, started = cpu_snapshot(pids), time.monotonic()
    due, accepted = await offer(client, services, rate, args.seconds, run)
    flowing = await drain(completions, accepted, args.drain)
    cpu, elapsed = cpu_used(before, cpu_snapshot(pids)), time.monotonic() - started
    scraped_after = await scrape_metrics(admin, running.stack)
    latencies, unfinished, duplicated = tally(due, accepted, completions.seen)
    ours = [seen for cid, _, seen in completions.seen if cid in accepted]
    span = (max(ours) - min(due.values())) if ours else math.nan
    lost, late = (0, unfinished) if flowing else (unfinished, 0)
    hops = {
        (service, topic): mean
        for service, text in scraped_after.items()
        for topic, mean in mean_hops(histogram_totals(scraped_before[service]), histogram_totals(text)).items()
    }
    batches = batch_sizes(scraped_before, scraped_after, elapsed)
    return RateResult(
        rate, len(due), len(accepted), latencies, lost, late, duplicated, span, cpu, due, accepted, hops, batches
    )


async def scrape_metrics(client: httpx.AsyncClient, stack: Stack) -> dict[str, str]:
    """Each chain service's ``/metrics`` exposition."""
    texts = {}
    for service in sorted({service for service, _ in HOPS}):
        answer = await client.get(f"http://127.0.0.1:{stack.port_base + SERVICES.index(service)}/metrics")
        answer.raise_for_status()
        texts[service] = answer.text
    return texts


RELAY = "outbox relay"
BatchSizes = dict[tuple[str, str], tuple[float, float]]  # (service, what): per second, mean events in each


def batch_sizes(before: dict[str, str], after: dict[str, str], seconds: float) -> BatchSizes:
    """Per service and topic (with the way its batches came, ``gantry_batch_events``) and for its
    outbox relay (``gantry_outbox_relayed_rows``): batches per second over ``seconds``, and the mean
    events (rows) in each, between two scrapes."""
    sizes = {}
    for service, text in after.items():
        for metric, label in (("gantry_batch_events", "topic,way"), ("gantry_outbox_relayed_rows", "")):
            was = histogram_totals(before[service], metric, label=label)
            for key, (summed, counted) in histogram_totals(text, metric, label=label).items():
                summed_before, counted_before = was.get(key, (0.0, 0.0))
                events, batches = summed - summed_before, counted - counted_before
                if batches > 0:
                    sizes[(service, key or RELAY)] = (batches / seconds, events / batches)
    return sizes


async def drain(completions: Completions, accepted: set[str], longest: float) -> bool:
    """Wait until every accepted chain completed, or none completed for ``QUIET_SECONDS`` (the
    rest are lost), or ``longest`` seconds passed; True when chains were still completing then
    (the rest are late, not lost: the run was too short to tell)."""
    deadline = time.monotonic() + longest
    count, progressed = -1, time.monotonic()
    while True:
        done = {cid for cid, _, _ in completions.seen} & accepted
        now = time.monotonic()
        if len(done) == len(accepted):
            return False
        if len(done) != count:
            count, progressed = len(done), now
        if now - progressed > QUIET_SECONDS:
            return False
        if now > deadline:
            return True
        await asyncio.sleep(0.2)


async def idle_cpu(running: Running, seconds: float) -> dict[str, float]:
    """Each process's CPU, in % of one core, over ``seconds`` with nothing to do."""
    pids = running.pids()
    before = cpu_snapshot(pids)
    await asyncio.sleep(seconds)
    return {name: 100 * used / seconds for name, used in cpu_used(before, cpu_snapshot(pids)).items()}


Idle = dict[str, float]  # each process's CPU, % of one core


async def measure(running: Running, args: argparse.Namespace) -> tuple[Idle, list[RateResult], Idle | None]:
    stack = running.stack
    async with AsyncExitStack() as opened:
        admin = await opened.enter_async_context(stack.client())
        hooks = HookClient(stack.gateway, CONNECTIONS)
        opened.push_async_callback(hooks.aclose)
        codes = [f"svc{index:02d}" for index in range(args.services)]
        try:
            services = list(await asyncio.gather(*(prepare(admin, code) for code in codes)))
        except RuntimeError as refused:  # Gantry's answer says what; the services' logs say why
            raise RuntimeError(f"{refused}\n{stack.trouble()}") from refused
        await asyncio.sleep(3)  # the preparation's last events settle
        idle = await idle_cpu(running, args.idle)
        results = []
        async with Completions(stack.bootstrap) as completions:
            for run, rate in enumerate(float(r) for r in args.rates.split(",")):
                results.append(await run_rate(running, hooks, admin, completions, services, rate, args, run))
                print(f"  {rate:g} hooks/s done", flush=True)
            # a chain counted lost after its rate's wait may still complete: wait once more for all
            await drain(completions, set().union(*(result.accepted_ids for result in results)), args.drain)
            for result in results:
                result.settle(completions.seen)
        rested = None
        if args.rest > 0:  # at rest: no event for longer than the consumers take to sleep deepest
            await asyncio.sleep(args.rest)
            rested = await idle_cpu(running, args.idle)
    return idle, results, rested


def report(
    kind: str, args: argparse.Namespace, idle: Idle, results: list[RateResult], rested: Idle | None = None
) -> None:
    print(f"\nchain under load, {kind}, {args.services} services, {args.seconds} s per rate:")
    rows = []
    for r in results:
        completed = len(r.latencies)
        rows.append(
            (
                f"{r.rate:g}",
                r.offered,
                r.accepted,
                completed,
                r.lost,
                r.late,
                r.duplicated,
                completed / r.seconds if r.seconds and not math.isnan(r.seconds) else math.nan,
                *(1000 * percentile(r.latencies, f) for f in (0.5, 0.95, 0.99)),
                1000 * sum(r.cpu.values()) / completed if completed else math.nan,
            )
        )
    headers = (
        "hooks/s",
        "offered",
        "accepted",
        "completed",
        "lost",
        "late",
        "duplicated",
        "chains/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "CPU ms/chain",
    )
    print(table(headers, rows))
    names = [name for name in PROCESSES if name in idle]
    print("\nCPU ms per chain, by process (idle burn included):")
    print(
        table(
            ("hooks/s", *names),
            [(f"{r.rate:g}", *(1000 * r.cpu.get(n, 0) / max(1, len(r.latencies)) for n in names)) for r in results],
        )
    )
    print("\nmean hop per event, ms (from the event's own time to its service having handled it):")
    print(
        table(
            ("hooks/s", *(f"{service}: {topic}" for service, topic in HOPS)),
            [(f"{r.rate:g}", *(1000 * r.hops.get(hop, math.nan) for hop in HOPS)) for r in results],
        )
    )
    kinds = sorted({key for r in results for key in r.batches})
    print("\nbatches per second and mean events in each, by service and topic (the way they came), and each relay:")
    print(
        table(
            ("service", "topic, way", *(f"{r.rate:g} hooks/s" for r in results)),
            [
                (
                    service,
                    key,
                    *(
                        "{:.1f}/s × {:.1f}".format(*r.batches[(service, key)]) if (service, key) in r.batches else "-"
                        for r in results
                    ),
                )
                for service, key in kinds
            ],
        )
    )
    print(f"\nidle CPU over {args.idle:g} s (% of one core):")
    idles = [("3 s after the set-up, before any load", idle)]
    if rested is not None:
        idles.append((f"at rest: {args.rest:g} s after the load's last chain", rested))
    print(table(("when", *names, "all"), [(when, *(i[n] for n in names), sum(i.values())) for when, i in idles]))
    figures = [
        RateFigures(
            r.rate, r.offered, r.accepted, len(r.latencies), r.lost + r.late + r.duplicated, row[7], row[10], row[11]
        )
        for r, row in zip(results, rows, strict=True)
    ]
    suffix = "" if kind.startswith("embedded") and kind.endswith("sqlite") else "_kafka"
    print("\nthe goals, beside this run's figures:")
    print(goal_table(chain_goals(figures, sum((rested or idle).values()), suffix=suffix)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--rates", default="20,50,100", help="comma-separated hooks per second")
    parser.add_argument("--seconds", type=float, default=20, help="load per rate (keep it ≤ 60 on a shared machine)")
    parser.add_argument("--idle", type=float, default=10, help="seconds of idle CPU measured before the load")
    parser.add_argument("--drain", type=float, default=120, help="longest wait for the last chains after the load")
    parser.add_argument(
        "--rest",
        type=float,
        default=SLEEP_AFTER_SECONDS + 5,
        help="after the load, seconds of quiet before the idle CPU is measured again, at rest (0: not measured)",
    )
    add_stack_options(parser)
    args = parser.parse_args()
    with running_stack(args) as running:
        idle, results, rested = asyncio.run(measure(running, args))
        kind = running.stack.kind
    report(kind, args, idle, results, rested)


if __name__ == "__main__":
    main()
