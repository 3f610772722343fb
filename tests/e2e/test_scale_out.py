"""Scale out: two instances of every service on Apache Kafka (6 partitions per topic) and one
PostgreSQL database share the work, and kill -9 of one instance of each under load loses nothing
and duplicates nothing.

Twelve services are prepared (released, auto-release and auto-deploy on). Pipeline Hooks go out at
a fixed rate through both gateways in turn; a third of the way in, every process of instance A is
killed with SIGKILL, and the rest go through instance B's gateway. A hook whose request died with
A is sent again through B with the same Idempotency-Key, as GitLab or a load balancer would.

The rule checked, what a user would see: each hook makes exactly one version, one release and one
deployment of that version, rendered once; the versions API and the deploy API agree. On the bus,
each hook's chain holds exactly one event id per step. A relay killed after the broker took a
batch but before it marked the rows sent leaves them to the other relay, which publishes them
again, so one event id may appear in more than one record: that is allowed after the kill (and only
then: before it the relays take turns), because the consumers' inbox applies an event id once, and
an event applied twice would have published a second event with another id, which the count sees.
Both instances of each service hold partitions before the kill (each partition held by one); the
survivor holds them all after.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.chain_latency import CHAIN, ENV, prepare
from shared.auth import webhook_secret
from shared.events import utcnow
from shared.kafka_admin import consumer_lag
from shared.settings import SERVICES
from tests.conftest import started_kafka
from tests.e2e.instances import (
    PARTITIONS,
    Bus,
    Instance,
    instances,
    partitions_by_member,
    scaled_out_env,
    start_all,
    widen_topics,
)
from tests.e2e.stack import success_hook
from tests.harness import PostgresServer
from tests.support import ADMIN, SECRET, eventually

pytestmark = pytest.mark.e2e

SERVICE_COUNT = 12  # keys enough that each instance owns some of every topic's busy partitions
RATE, SECONDS, KILL_AT = 16.0, 30.0, 10.0  # hooks per second, for how long, the kill after how long
CONSUMERS = ("versioning", "release", "deploy")  # the services that consume the chain's events


def hook(service: dict[str, Any], pipeline_id: int) -> tuple[dict[str, Any], dict[str, str]]:
    body = success_hook(service, pipeline_id)
    headers = {"X-Gitlab-Event": "Pipeline Hook", "X-Gitlab-Token": webhook_secret(SECRET, service["scm_project_id"])}
    return body, headers


async def send(gateway: httpx.AsyncClient, service: dict[str, Any], pipeline_id: int, delivery: str) -> bool:
    body, headers = hook(service, pipeline_id)
    try:
        answer = await gateway.post("/webhooks/gitlab", json=body, headers={**headers, "Idempotency-Key": delivery})
    except httpx.HTTPError:
        return False
    return answer.status_code == 202


def handled(metrics_text: str) -> float:
    """Events this process handled so far: the count of its hop histogram over every topic."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("gantry_event_hop_seconds_count{")
    )


async def handled_per_instance(client: httpx.AsyncClient, a: Instance, b: Instance) -> dict[str, tuple[float, float]]:
    found = {}
    for service in CONSUMERS:
        texts = [(await client.get(f"{i.url(service)}/metrics")).text for i in (a, b)]
        found[service] = (handled(texts[0]), handled(texts[1]))
    return found


async def assignments(instance: Instance) -> dict[str, list[dict[str, set[int]]]]:
    """Per service, the partitions each member of its consumer group holds."""
    bootstrap, prefix = instance.env["GANTRY_KAFKA_BOOTSTRAP"], instance.env["GANTRY_KAFKA_GROUP_PREFIX"]
    return {service: await partitions_by_member(bootstrap, f"{prefix}-{service}") for service in SERVICES}


def each_partition_held_once(assigned: dict[str, list[dict[str, set[int]]]], members: int) -> None:
    """Every partition of every topic a service consumes is held by exactly one of its ``members``."""
    for service, held in assigned.items():
        assert len(held) == members and all(any(m.values()) for m in held), f"{service}: {held}"
        for topic in set().union(*held):
            owners = Counter(p for member in held for p in member.get(topic, set()))
            assert owners == dict.fromkeys(range(PARTITIONS), 1), f"{service}: {topic} held {dict(owners)}"


class Load:
    """Hooks at ``RATE`` through A's and B's gateways in turn; A killed after ``KILL_AT`` seconds."""

    def __init__(self, a: Instance, b: Instance, services: list[dict[str, Any]]) -> None:
        self.a, self.b, self.services = a, b, services
        self.sent: dict[str, tuple[dict[str, Any], int]] = {}  # delivery id: (service, pipeline id)
        self.resent: list[str] = []
        self.shared_before_kill: dict[str, tuple[float, float]] = {}
        self.killed_at = utcnow()
        self.assigned_before_kill: dict[str, list[dict[str, set[int]]]] = {}

    async def run(self, via_a: httpx.AsyncClient, via_b: httpx.AsyncClient, plain: httpx.AsyncClient) -> None:
        start, kill_index = time.monotonic(), int(RATE * KILL_AT)
        tasks: dict[str, asyncio.Task[bool]] = {}
        for index in range(int(RATE * SECONDS)):
            if index == kill_index:
                self.shared_before_kill = await handled_per_instance(plain, self.a, self.b)
                self.assigned_before_kill = await assignments(self.b)
            await asyncio.sleep(max(0.0, start + index / RATE - time.monotonic()))
            service = self.services[index % len(self.services)]
            delivery, pipeline_id = f"scale-{index}", 1000 + index
            self.sent[delivery] = (service, pipeline_id)
            gateway = via_a if index < kill_index and index % 2 == 0 or index == kill_index else via_b
            tasks[delivery] = asyncio.create_task(send(gateway, service, pipeline_id, delivery))
            if index == kill_index:  # A dies while its gateway has this hook in hand
                await self.burst(via_a)
                await asyncio.sleep(0.005)
                self.killed_at = utcnow()
                self.a.kill()
        for delivery, task in tasks.items():
            if not await task:  # its request died with A (or timed out): GitLab would send it again
                self.resent.append(delivery)
                service, pipeline_id = self.sent[delivery]
                assert await send(via_b, service, pipeline_id, delivery), f"{delivery} refused by B too"

    async def burst(self, via_a: httpx.AsyncClient) -> None:
        """A hook for every service through A, all accepted: the kill that follows at once finds
        these chains mid-way (a hop takes longer than the moment between)."""
        hooks = {f"scale-burst-{i}": (service, 100_000 + i) for i, service in enumerate(self.services)}
        self.sent.update(hooks)
        accepted = await asyncio.gather(*(send(via_a, s, p, delivery) for delivery, (s, p) in hooks.items()))
        assert all(accepted), f"the burst through A was not all accepted: {accepted}"


async def quiet(b: Instance, bootstrap: str, client: httpx.AsyncClient) -> bool:
    """B has published its whole outbox and its groups have consumed everything."""
    groups: dict[str, list[str]] = {}
    for service in SERVICES:
        state = (await client.get(f"{b.url(service)}/readyz")).json()
        if state["outbox_pending"] != 0:
            return False
        if state["consumes"]:
            groups[state["group"]] = state["consumes"]
    return await asyncio.to_thread(consumer_lag, bootstrap, groups) == 0


def check_bus(bus: Bus, load: Load) -> None:
    chains, by_id = bus.chains(set(load.sent)), {event["id"]: event for _, event in bus.events}
    republished, mid_way = 0, 0
    for delivery in load.sent:
        chain = chains.get(delivery, {})
        assert chain.get("gitlab.hook.received"), f"{delivery}: its hook is not on the bus"
        for topic in CHAIN[1:]:
            ids = chain.get(topic, Counter())
            assert len(ids) == 1, f"{delivery}: {len(ids)} distinct {topic} events, not 1: {dict(ids)}"
            republished += sum(count - 1 for count in ids.values())
        status = by_id[next(iter(chain["deploy.status"]))]
        assert status["data"]["state"] == "rendered", status
        began = min(datetime.fromisoformat(by_id[i]["time"]) for i in chain["gitlab.hook.received"])
        mid_way += began <= load.killed_at < datetime.fromisoformat(status["time"])
    print(f"chains mid-way when A was killed: {mid_way}; records published again after the kill: {republished}")
    assert mid_way > 0, "the kill hit no chain mid-way: nothing was shown"
    relayed_once_until_the_kill(bus, {i for chain in chains.values() for ids in chain.values() for i in ids}, load)


def relayed_once_until_the_kill(bus: Bus, ids: set[str], load: Load) -> None:
    """The two instances' relays take turns: an event is published twice only when the relay that
    sent it was killed before marking it sent, so every copy but the first comes after the kill."""
    killed_ms = int(load.killed_at.timestamp() * 1000)
    twice_before = {i: times for i in ids if len(times := sorted(bus.produced[i])) > 1 and times[1] < killed_ms}
    assert twice_before == {}, f"events published more than once before the kill: {twice_before}"


async def check_apis(api: httpx.AsyncClient, project: str, load: Load) -> None:
    wanted: dict[str, set[int]] = defaultdict(set)
    for service, pipeline_id in load.sent.values():
        wanted[service["code"]].add(pipeline_id)
    for code, pipelines in wanted.items():
        answer = await api.get(f"/api/versioning/projects/{project}/services/{code}/versions", params={"limit": 500})
        versions = [v for v in answer.raise_for_status().json() if v["pipeline_id"] in pipelines]
        made = Counter(v["pipeline_id"] for v in versions)
        assert set(made) == pipelines and set(made.values()) == {1}, f"{code}: versions per pipeline {made}"
        base = f"/api/deploy/environments/{ENV}/projects/{project}/services/{code}/deployments"
        deployments = [d for d in (await api.get(base, params={"limit": 500})).json() if d["trigger"] == "auto"]
        per_version = Counter(d["version"] for d in deployments)
        assert per_version == Counter(v["name"] for v in versions), f"{code}: deployments per version {per_version}"
        assert {d["state"] for d in deployments} == {"rendered"}, deployments


@pytest.fixture
def own_kafka() -> Iterator[str]:
    """An Apache Kafka broker of this test's own: its topics are made with 6 partitions here, and
    the other tests' broker keeps the partitions they were written against."""
    with started_kafka() as bootstrap:
        yield bootstrap


async def test_two_instances_share_the_work_and_a_kill_9_of_one_loses_and_duplicates_nothing(
    own_kafka: str, postgres: PostgresServer, tmp_path: Path, unique_id: str
) -> None:
    database = f"gantry_scale_{unique_id}"
    postgres.create_database(database)
    await widen_topics(own_kafka)
    env = scaled_out_env(own_kafka, postgres.url(database), f"scale{unique_id}", PARTITIONS)
    a, b = instances(tmp_path, env)
    try:
        print(f"\ntwo instances of five services ready in {await asyncio.to_thread(start_all, [a, b]):.1f}s")
        await run_and_check(a, b, own_kafka, f"scale{unique_id[:6]}")
    except BaseException:
        print(a.logs() + b.logs())
        raise
    finally:
        a.stop()
        b.stop()


async def run_and_check(a: Instance, b: Instance, bootstrap: str, project: str) -> None:
    limits = httpx.Limits(max_connections=200)
    async with (
        httpx.AsyncClient(base_url=a.gateway, headers=ADMIN, timeout=30, limits=limits) as via_a,
        httpx.AsyncClient(base_url=b.gateway, headers=ADMIN, timeout=30, limits=limits) as via_b,
        httpx.AsyncClient(timeout=10) as plain,
    ):
        codes = [f"svc{index:02d}" for index in range(SERVICE_COUNT)]
        services = list(await asyncio.gather(*(prepare(via_a, code, project) for code in codes)))
        load = Load(a, b, services)
        await load.run(via_a, via_b, plain)
        print(f"hooks: {len(load.sent)}, sent again through B after the kill: {len(load.resent)}")
        for service, (on_a, on_b) in load.shared_before_kill.items():
            assert on_a > 0 and on_b > 0, f"{service}: events handled before the kill, A {on_a}, B {on_b}"
        each_partition_held_once(load.assigned_before_kill, members=2)
        async with Bus(bootstrap) as bus:

            async def all_rendered() -> bool:
                await bus.catch_up()
                chains = bus.chains(set(load.sent))
                return all(chains.get(d, {}).get("deploy.status") for d in load.sent)

            await eventually(all_rendered, timeout=150, interval=1.0)
            await eventually(lambda: quiet(b, bootstrap, plain), timeout=60, interval=0.5)
            await eventually(lambda: quiet(b, bootstrap, plain), timeout=60, interval=0.5)  # twice: nothing mid-way
            await bus.catch_up()
            check_bus(bus, load)
        each_partition_held_once(await assignments(b), members=1)  # B took over A's partitions
        await check_apis(via_b, project, load)
