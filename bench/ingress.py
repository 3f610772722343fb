"""Benchmark: GitLab's Pipeline Hooks taken at the front door, driven by ``wrk``.

    python -m bench.ingress [--connections 16,64] [--seconds 10] [--targets gateway,versioning]
                            [--kafka] [--postgres]

For each target (the gateway, and versioning's own door straight) and each connection count, a
fresh ``gantry up`` (embedded broker + SQLite unless --kafka/--postgres) gets one service, then
``wrk`` (Debian's package, installed when missing) posts valid signed Pipeline Hooks, each with a
new pipeline id, over that many keep-alive connections for ``--seconds``. A fresh stack per run
keeps the backlog one run leaves for versioning's consumer out of the next run's figures; that
consumer does work during each run, as it would in production. Prints requests/s and latency
percentiles as a table, with the CPU time the door's process spent per hook (which a busy
machine does not inflate the way it inflates latency) and its garbage collections meanwhile (from
its ``gantry_gc_pause_seconds``: how many, their time in all, how many held it over 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import math

import httpx

from bench.goals import goal_table
from bench.measures import cpu_seconds, histogram_totals, observations_over, table
from bench.running import add_stack_options, create_service, running_stack
from bench.wrk import WrkResult, run_wrk, wrk_binary
from shared.auth import webhook_secret
from shared.settings import SERVICES
from tests.support import SECRET

PROJECT, SERVICE = "bench", "api"
GC_PAUSES = "gantry_gc_pause_seconds"
TARGETS = ("gateway", "versioning")


def measure(args: argparse.Namespace, target: str, connections: int) -> tuple[WrkResult, float, tuple[float, ...]]:
    """wrk's figures, the CPU seconds the door's process used meanwhile, and its garbage collections."""
    with running_stack(args) as running:
        stack = running.stack
        service = asyncio.run(_prepare(stack))
        url = f"http://127.0.0.1:{stack.port_base + SERVICES.index(target)}/webhooks/gitlab"
        script_args = [
            webhook_secret(SECRET, service["scm_project_id"]),
            str(service["scm_project_id"]),
            service["repository_path"],
            "1000000",
        ]
        door = stack.service_pids()[target]
        metrics_url = f"http://127.0.0.1:{stack.port_base + SERVICES.index(target)}/metrics"
        before, collections = cpu_seconds(door), httpx.get(metrics_url).text
        result = run_wrk(url, connections=connections, seconds=args.seconds, script_args=script_args)
        cpu = cpu_seconds(door) - before
        return result, cpu, gc_pauses(collections, httpx.get(metrics_url).text)


def gc_pauses(before: str, after: str) -> tuple[float, float, float]:
    """The door's garbage collections between two scrapes: how many, their seconds in all, and how
    many held it longer than 50 ms (``gantry_gc_pause_seconds``)."""
    totals = [histogram_totals(text, GC_PAUSES, label="generation") for text in (before, after)]
    summed = sum(seconds for seconds, _count in totals[1].values()) - sum(s for s, _c in totals[0].values())
    counted = sum(count for _seconds, count in totals[1].values()) - sum(c for _s, c in totals[0].values())
    long = observations_over(after, GC_PAUSES, "0.05") - observations_over(before, GC_PAUSES, "0.05")
    return counted, summed, long


async def _prepare(stack) -> dict:  # type: ignore[no-untyped-def]
    async with stack.client() as api:
        return await create_service(api, PROJECT, SERVICE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", default="16,64", help="comma-separated connection counts")
    parser.add_argument("--seconds", type=int, default=10, help="load per run (keep it ≤ 60 on a shared machine)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="gateway and/or versioning")
    add_stack_options(parser)
    args = parser.parse_args()
    wrk_binary()  # install it (or say how) before any stack starts
    rows = []
    for target in args.targets.split(","):
        if target not in TARGETS:
            parser.error(f"unknown target {target!r}: use {' or '.join(TARGETS)}")
        for connections in (int(c) for c in args.connections.split(",")):
            result, cpu, (collections, collected_seconds, long_collections) = measure(args, target, connections)
            rows.append(
                (
                    target,
                    connections,
                    result.requests,
                    result.accepted_per_second,
                    result.not_2xx + result.socket_errors,
                    result.p50_ms,
                    result.p90_ms,
                    result.p99_ms,
                    result.max_ms,
                    cpu * 1e6 / result.requests if result.requests else math.nan,  # µs: 0.1 ms is too coarse
                    int(collections),
                    collected_seconds * 1000,
                    int(long_collections),
                )
            )
    kind = f"{'apache' if args.kafka else 'embedded'}+{'postgres' if args.postgres else 'sqlite'}"
    print(f"\nwebhook ingress, {kind}, {args.seconds} s per run (wrk, success Pipeline Hooks):")
    print(
        table(
            (
                "target",
                "connections",
                "requests",
                "accepted/s",
                "errors",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "door CPU µs/hook",
                "GC runs",
                "GC ms",
                "GC > 50 ms",
            ),
            rows,
        )
    )
    at_64 = [row for row in rows if row[0] == "gateway" and row[1] == 64]
    if at_64 and kind == "embedded+sqlite":
        print("\nthe goals, beside this run's figures:")
        print(goal_table({"ingress_per_s": at_64[0][3], "ingress_p99_ms": at_64[0][7]}))


if __name__ == "__main__":
    main()
