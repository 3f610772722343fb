"""Benchmark: time from GitLab's Pipeline Hook to ``deploy.status``, through all five services.

    python -m bench.chain_latency [--pipelines 20] [--pause 0] [--kafka BOOTSTRAP]

Starts ``gantry up`` in a temporary folder (embedded broker + SQLite unless --kafka is given),
prepares a service released to an environment with auto-release and auto-deploy on, then posts
``--pipelines`` successful Pipeline Hooks one after another and prints, for each, the time from
the hook's answer to the ``deploy.status`` event of its version, plus each service's memory.
``--pause`` waits that long before each hook: past a few seconds (``IDLE_AFTER_SECONDS``) each
chain starts from a quiet Gantry, its consumers at their idle fetch wait. It ends with the goal of
a hop's p50 at low load (one chain at a time), which the idle CPU goal is held to.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench.goals import goal_table
from shared.kafka_transport import IDLE_AFTER_SECONDS
from shared.settings import SERVICES
from tests.e2e.stack import Stack, post_pipeline_hook
from tests.support import TopicReader, eventually

PROJECT, SERVICE, ENV = "bench", "api", "perf"


async def prepare(api: httpx.AsyncClient, code: str = SERVICE, project: str = PROJECT) -> dict:
    """Service ``code`` of ``project`` released to the environment, its first version deployed,
    auto-release and auto-deploy on: from then on each successful pipeline of it goes all the way
    to deploy.status. A step Gantry refuses stops it with Gantry's answer: a service left half
    prepared would only show later as chains lost."""
    made = await api.post(
        "/api/catalog/projects", json={"code": project, "name": project.title(), "gitlab_group": project}
    )
    _done(made, "the project", shared=True)
    answer = await api.post(
        f"/api/catalog/projects/{project}/services",
        json={"code": code, "name": code.title(), "group": "bench", "type": "go-http"},
    )
    service = _done(answer, f"the service {code}").json()
    made = await api.post("/api/release/environments", json={"code": ENV, "name": "Perf", "tier": "test"})
    _done(made, "the environment", shared=True)
    base = f"/api/release/projects/{project}/services/{code}"

    async def released() -> bool:
        return (await api.post(f"{base}/releases", json={"environment": ENV})).status_code == 201

    await eventually(released, timeout=60, interval=0.1)
    _done(await api.put(f"{base}/auto-release", json={"enabled": True}), f"auto-release of {code}")
    await post_pipeline_hook(api, service, 1)
    version = await eventually(lambda: _version(api, 1, code, project), timeout=60)
    made = await api.post(
        f"/api/deploy/environments/{ENV}/resources", json={"name": "cfg", "type": "config", "data": {}}
    )
    _done(made, "the resource cfg", shared=True)

    async def deployed() -> bool:
        answer = await api.post(
            "/api/deploy/deployments",
            json={
                "project": project,
                "service": code,
                "environment": ENV,
                "version": version["name"],
                "resources": ["cfg"],
                "replicas": 1,
            },
        )
        return answer.status_code == 202

    await eventually(deployed, timeout=60, interval=0.1)
    rule = f"/api/deploy/environments/{ENV}/projects/{project}/services/{code}/auto-deploy"
    _done(await api.put(rule, json={"enabled": True}), f"auto-deploy of {code}")
    return service


def _done(answer: httpx.Response, what: str, *, shared: bool = False) -> httpx.Response:
    """``answer`` when Gantry did it (or, for what every service shares, had done it: 409)."""
    if answer.is_success or (shared and answer.status_code == 409):
        return answer
    request = f"{answer.request.method} {answer.request.url.path}"
    raise RuntimeError(f"preparing {what}: {request} answered {answer.status_code}: {answer.text[:500]}")


async def _version(
    api: httpx.AsyncClient, pipeline_id: int, code: str = SERVICE, project: str = PROJECT
) -> dict | None:
    answer = await api.get(f"/api/versioning/projects/{project}/services/{code}/versions")
    found = [v for v in answer.json() if v["pipeline_id"] == pipeline_id] if answer.status_code == 200 else []
    return found[0] if found else None


CHAIN = (
    "gitlab.hook.received",
    "pipeline.succeeded",
    "version.created",
    "version.released",
    "deploy.requested",
    "deploy.status",
)


async def measure(stack: Stack, pipelines: int, pause: float = 0.0) -> tuple[list[float], dict[str, list[float]]]:
    """End-to-end latencies, and per hop the time between the events' own timestamps."""
    latencies: list[float] = []
    hops: dict[str, list[float]] = {f"{a} → {b}": [] for a, b in zip(CHAIN, CHAIN[1:], strict=False)}
    async with stack.client() as api:
        service = await prepare(api)
        async with TopicReader(stack.bootstrap, *CHAIN) as topics:
            for pipeline_id in range(100, 100 + pipelines):
                await asyncio.sleep(pause)
                started = time.monotonic()
                receipt = await post_pipeline_hook(api, service, pipeline_id)
                first = await topics.wait_for(lambda t, v, e=receipt["event_id"]: t == CHAIN[0] and v["id"] == e)
                events = [first]
                for topic in CHAIN[1:]:
                    events.append(
                        await topics.wait_for(
                            lambda t, v, want=topic, cid=first["correlation_id"]: (
                                t == want and v["correlation_id"] == cid
                            )
                        )
                    )
                latencies.append(time.monotonic() - started)
                for values, before, after in zip(hops.values(), events, events[1:], strict=False):
                    values.append(
                        (datetime.fromisoformat(after["time"]) - datetime.fromisoformat(before["time"])).total_seconds()
                    )
    return latencies, hops


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds of quiet before each hook")
    parser.add_argument("--kafka", help="bootstrap of an Apache Kafka to use instead of the embedded broker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, Stack(Path(home), kafka_bootstrap=args.kafka) as stack:
        latencies, hops = asyncio.run(measure(stack, args.pipelines, args.pause))
        memory = {name: rss_mb(pid) for name, pid in stack.service_pids().items()}
    latencies.sort()
    print(f"broker: {stack.kind}; gantry up ready in {stack.startup_seconds:.1f}s")
    print(
        f"hook → deploy.status over {len(latencies)} pipelines: "
        f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p90 {latencies[int(len(latencies) * 0.9) - 1] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    for name, values in hops.items():
        print(f"  {name}: p50 {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms")
    print("memory (RSS): " + ", ".join(f"{name} {memory.get(name, 0):.0f} MB" for name in SERVICES))
    every_hop = [value for values in hops.values() for value in values]
    if not args.kafka and every_hop:
        hop_p50 = statistics.median(every_hop) * 1000
        print(f"\nevery hop together: p50 {hop_p50:.0f} ms (after {args.pause:g} s of quiet each)")
        if args.pause < IDLE_AFTER_SECONDS:  # the goal is about a Gantry in use, not one waking up
            print(goal_table({"hop_p50_ms": hop_p50}))


if __name__ == "__main__":
    main()
