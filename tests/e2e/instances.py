"""Several instances of Gantry's five services on one Kafka cluster and one PostgreSQL database,
as a user scales out: each instance a set of ``python -m services.<name>`` processes on a port
range of its own (``GANTRY_PORT_BASE``) and a data folder of its own, all sharing the database,
the consumer groups (``GANTRY_KAFKA_GROUP_PREFIX``) and the installation secret; and what a test
reads of them on the bus: the partitions each member of a group holds, every record of the chain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.protocol.group import MemberAssignment

from bench.chain_latency import CHAIN
from gantry.processes import die_with_parent, log_tail, terminate
from shared.events import ALL_TOPICS
from shared.settings import SERVICES
from tests.e2e.stack import free_port_range
from tests.support import SECRET

READY_TIMEOUT = 180
PARTITIONS = 6  # of every topic: as many instances of a service as this share its work


class Instance:
    """One process of each service, started by :meth:`start`; its gateway at :attr:`gateway`."""

    def __init__(self, name: str, home: Path, shared_env: dict[str, str]) -> None:
        self.name = name
        self.home = home / name
        self.port_base = free_port_range()
        self.env = {
            **shared_env,
            "GANTRY_HOME": str(self.home),
            "GANTRY_PORT_BASE": str(self.port_base),
            "PYTHONUNBUFFERED": "1",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.port_base + SERVICES.index(service)}"

    @property
    def gateway(self) -> str:
        return self.url("gateway")

    def log(self, service: str) -> Path:
        return self.home / "logs" / f"{service}.log"

    def start(self) -> None:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        for service in SERVICES:
            with self.log(service).open("ab") as log:
                self.processes[service] = subprocess.Popen(
                    [sys.executable, "-m", f"services.{service}"],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                )

    def ready(self, client: httpx.Client) -> list[str]:
        """The services not ready yet; raises when one has exited."""
        waiting = []
        for service, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{service} of instance {self.name} exited with {process.returncode}:\n"
                    + log_tail(self.log(service))
                )
            try:
                if client.get(f"{self.url(service)}/readyz").status_code == 200:
                    continue
            except httpx.HTTPError:
                pass
            waiting.append(service)
        return waiting

    def kill(self) -> None:
        """kill -9 every process of this instance: no shutdown, no flush, no offsets committed."""
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
        for process in self.processes.values():
            process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            terminate(process, timeout=20)

    def logs(self) -> str:
        return "".join(
            f"\n--- {self.name}/{service}.log ---\n{log_tail(self.log(service), 25)}" for service in SERVICES
        )


def instances(home: Path, env: dict[str, str], names: tuple[str, ...] = ("a", "b")) -> list[Instance]:
    """Instances on port ranges apart from one another (each range was free a moment ago)."""
    made: list[Instance] = []
    for name in names:
        instance = Instance(name, home, env)
        while any(abs(instance.port_base - other.port_base) < len(SERVICES) for other in made):
            instance = Instance(name, home, env)
        made.append(instance)
    return made


def scaled_out_env(kafka_bootstrap: str, database_url: str, group_prefix: str, partitions: int) -> dict[str, str]:
    """What every instance shares: the environment without any GANTRY_* of the caller's own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GANTRY_") and key != "KUBECONFIG"}
    env.update(
        {
            "GANTRY_SECRET": SECRET,
            "GANTRY_LOG_LEVEL": "info",
            "GANTRY_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "GANTRY_DATABASE_URL": database_url,
            "GANTRY_KAFKA_GROUP_PREFIX": group_prefix,
            "GANTRY_KAFKA_PARTITIONS": str(partitions),
            "GANTRY_KAFKA_FETCH_MAX_WAIT_MS": "100",
            # The group notices a killed member after this long and gives its partitions to the others.
            "GANTRY_KAFKA_SESSION_TIMEOUT_MS": "3000",
        }
    )
    return env


def start_all(instances: list[Instance]) -> float:
    """Start every instance and wait until all their services are ready; the seconds it took."""
    started = time.monotonic()
    for instance in instances:
        instance.start()
    deadline = started + READY_TIMEOUT
    with httpx.Client(timeout=2) as client:
        while waiting := [f"{i.name}/{s}" for i in instances for s in i.ready(client)]:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not ready after {READY_TIMEOUT}s: {', '.join(waiting)}" + "".join(i.logs() for i in instances)
                )
            time.sleep(0.3)
    return time.monotonic() - started


async def partitions_by_member(bootstrap: str, group: str) -> list[dict[str, set[int]]]:
    """The partitions each member of a consumer group holds now, by topic: one dict per member."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    found = []
    for response in responses:
        for described in response.to_object()["groups"]:
            for member in described["members"]:
                assignment = MemberAssignment.decode(member["member_assignment"])
                found.append({topic: set(partitions) for topic, partitions in assignment.assignment})
    return found


async def widen_topics(bootstrap: str) -> None:
    """The shared test broker may hold Gantry's topics from earlier tests, made with fewer
    partitions (a service leaves an existing topic alone): give them ``PARTITIONS``. Nothing is in
    flight on them now, so no key's order is broken by the move."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics()) & set(ALL_TOPICS)
        described = await admin.describe_topics(sorted(existing)) if existing else []
        fewer = {d["topic"]: NewPartitions(PARTITIONS) for d in described if len(d["partitions"]) < PARTITIONS}
        if fewer:
            await admin.create_partitions(fewer)
    finally:
        await admin.close()


class Bus:
    """Every record of the chain's topics, read from the beginning; ``catch_up`` reads to the end."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"scale-{uuid.uuid4().hex[:6]}",
        )
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.produced: dict[str, list[int]] = defaultdict(list)  # event id: its records' times (ms)

    async def __aenter__(self) -> Bus:
        await self.consumer.start()
        partitions = [TopicPartition(t, p) for t in CHAIN for p in range(PARTITIONS)]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_beginning(*partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def catch_up(self) -> None:
        ends = await self.consumer.end_offsets(list(self.consumer.assignment()))
        while [tp for tp, end in ends.items() if await self.consumer.position(tp) < end]:
            for tp, records in (await self.consumer.getmany(timeout_ms=500, max_records=5000)).items():
                for record in records:
                    try:
                        event = json.loads(record.value or b"")
                    except ValueError:
                        continue  # another test's odd record
                    if isinstance(event, dict) and "id" in event:
                        self.events.append((tp.topic, event))
                        self.produced[event["id"]].append(record.timestamp)

    def chains(self, correlation_ids: set[str]) -> dict[str, dict[str, Counter[str]]]:
        """For each of ``correlation_ids``: per topic, how many records carried each event id
        (deploy.status: only the final states)."""
        found: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
        for topic, event in self.events:
            cid = event.get("correlation_id")
            if cid not in correlation_ids:
                continue
            if topic == "deploy.status" and event["data"]["state"] not in ("rendered", "succeeded", "failed"):
                continue
            found[cid][topic][event["id"]] += 1
        return found
