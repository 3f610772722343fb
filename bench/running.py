"""``gantry up`` for a benchmark: embedded defaults, or Apache Kafka and/or PostgreSQL from the
test harness (``tests/harness``), each started here and stopped afterwards."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.stack import Stack
from tests.harness import kafka_server, postgres_server


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kafka", action="store_true", help="Apache Kafka (from tests/harness) instead of embedded")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL (from tests/harness) instead of SQLite")


@dataclass
class Running:
    """A running ``gantry up`` and the other processes the benchmark watches (by name: pid)."""

    stack: Stack
    others: dict[str, int] = field(default_factory=dict)

    def pids(self) -> dict[str, int]:
        """Every Gantry service's process, the broker's (embedded, or a local Apache Kafka's) and
        the rest the benchmark started (a local PostgreSQL's postmaster, whose connections'
        processes ``bench.measures.cpu_snapshot`` counts with it)."""
        found = self.stack.service_pids()
        embedded = embedded_broker_pid(self.stack)
        if embedded is not None:
            found["broker"] = embedded
        return {**found, **self.others}


def embedded_broker_pid(stack: Stack) -> int | None:
    """The embedded broker ``gantry up`` started (a child process running Tansu), if any."""
    assert stack.process is not None
    pid = stack.process.pid
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if b"tansu" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return None


@contextmanager
def running_stack(args: argparse.Namespace) -> Iterator[Running]:
    """``gantry up`` in a temporary folder, on the servers ``args`` chose; everything stopped after."""
    with ExitStack() as stack:
        bootstrap = database_url = None
        others: dict[str, int] = {}
        if args.kafka:
            kafka = kafka_server()
            kafka.start()
            stack.callback(kafka.stop)
            bootstrap = kafka.bootstrap
            process = getattr(kafka, "_proc", None)  # a local broker's JVM (none for a container)
            if process is not None:
                others["broker"] = process.pid
        if args.postgres:
            postgres = postgres_server()
            postgres.start()
            stack.callback(postgres.stop)
            postmaster = getattr(postgres, "postmaster_pid", None)  # a local server's (none for a container)
            if postmaster is not None:
                others["postgres"] = postmaster()
            database = f"gantry_bench_{os.urandom(4).hex()}"
            postgres.create_database(database)
            database_url = postgres.url(database)
        home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        gantry = stack.enter_context(Stack(home, kafka_bootstrap=bootstrap, database_url=database_url))
        yield Running(gantry, others)


async def create_service(api: httpx.AsyncClient, project: str, service: str) -> dict:
    """A project (created when missing) and one of its services, as catalog answers it."""
    await api.post("/api/catalog/projects", json={"code": project, "name": project.title(), "gitlab_group": project})
    answer = await api.post(
        f"/api/catalog/projects/{project}/services",
        json={"code": service, "name": service.title(), "group": project, "type": "go-http"},
    )
    answer.raise_for_status()
    return answer.json()  # type: ignore[no-any-return]
