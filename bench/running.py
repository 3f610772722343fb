"""``gantry up`` for a benchmark: embedded defaults, or Apache Kafka and/or PostgreSQL from the
test harness (``tests/harness``), each started here and stopped afterwards."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.e2e.stack import Stack
from tests.harness import kafka_server, postgres_server


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kafka", action="store_true", help="Apache Kafka (from tests/harness) instead of embedded")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL (from tests/harness) instead of SQLite")


@contextmanager
def running_stack(args: argparse.Namespace) -> Iterator[Stack]:
    """``gantry up`` in a temporary folder, on the servers ``args`` chose; everything stopped after."""
    with ExitStack() as stack:
        bootstrap = database_url = None
        if args.kafka:
            kafka = kafka_server()
            kafka.start()
            stack.callback(kafka.stop)
            bootstrap = kafka.bootstrap
        if args.postgres:
            postgres = postgres_server()
            postgres.start()
            stack.callback(postgres.stop)
            database = f"gantry_bench_{os.urandom(4).hex()}"
            postgres.create_database(database)
            database_url = postgres.url(database)
        home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        yield stack.enter_context(Stack(home, kafka_bootstrap=bootstrap, database_url=database_url))


async def create_service(api: httpx.AsyncClient, project: str, service: str) -> dict:
    """A project (created when missing) and one of its services, as catalog answers it."""
    await api.post("/api/catalog/projects", json={"code": project, "name": project.title(), "gitlab_group": project})
    answer = await api.post(
        f"/api/catalog/projects/{project}/services",
        json={"code": service, "name": service.title(), "group": project, "type": "go-http"},
    )
    answer.raise_for_status()
    return answer.json()  # type: ignore[no-any-return]
