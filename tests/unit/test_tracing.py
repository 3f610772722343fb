"""Traces: a request's ``traceparent`` goes with the events its transaction emits (kept in the
outbox row, sent by the relay in the record's headers) and a consumer continues it. Spans are
caught by the SDK's in-memory exporter; the e2e test follows one chain through a real OTLP receiver."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import bus, tracing
from shared.events import Envelope, ServiceChanged
from shared.outbox import OutboxRelay, UnitOfWork, emit
from shared.settings import Settings
from tests.unit.conftest import outbox
from tests.unit.things_service import OWNER, things_client

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("things", None, exporter=exporter)
    yield exporter
    tracing.configure_tracing("things", None)


@pytest.fixture
async def uow(make_uow) -> UnitOfWork:
    return await make_uow("things", [])


@pytest.fixture
async def client(uow: UnitOfWork, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with things_client(uow, Settings(home=tmp_path)) as http:
        yield http


async def relayed(uow: UnitOfWork) -> list:
    sent: list = []

    async def broker(records):
        sent.extend(records)
        return [None for _ in records]

    await OutboxRelay(uow.sessions, broker).relay_once()
    return sent


def trace_of(headers: list[tuple[str, bytes]]) -> str:
    return dict(headers)["traceparent"].decode().split("-")[1]


async def test_a_request_trace_goes_with_its_events_and_the_consumer_continues_it(
    spans: InMemorySpanExporter, client: httpx.AsyncClient, uow: UnitOfWork
) -> None:
    answer = await client.post("/things/lamp/changes", headers={**OWNER, "traceparent": TRACEPARENT})
    assert answer.status_code == 202
    (row,) = await outbox(uow, "service.changed")
    assert TRACE_ID in json.loads(row.trace_context)["traceparent"], "the row keeps the request's trace"
    (record,) = [record for record in await relayed(uow) if record[0] == "service.changed"]
    assert trace_of(record.headers) == TRACE_ID

    async def react(envelope: Envelope) -> None:  # the next hop emits in its own transaction
        async with uow.begin() as session:
            data = ServiceChanged(
                service_id="s2", project="shop", service="next", name="n", enabled=True, change="updated"
            )
            emit(session, data, cause=envelope)

    await bus.handle_record(record[0], b"s1", record[2], react, SimpleNamespace(), record.headers)
    (next_row,) = [row for row in await outbox(uow, "service.changed") if '"s2"' in row.payload]
    assert TRACE_ID in json.loads(next_row.trace_context)["traceparent"], "the chain stays one trace"

    finished = {span.name: span for span in spans.get_finished_spans()}
    server = finished["POST /things/{name}/changes"]
    assert server.kind == SpanKind.SERVER and server.parent.span_id == int(CALLER_SPAN, 16)
    publish, process = finished["service.changed publish"], finished["service.changed process"]
    assert publish.kind == SpanKind.PRODUCER and publish.parent.span_id == server.context.span_id
    assert process.kind == SpanKind.CONSUMER and process.parent.span_id == publish.context.span_id
    assert {span.context.trace_id for span in (server, publish, process)} == {int(TRACE_ID, 16)}
    assert server.resource.attributes["service.name"] == "things"


async def test_with_traces_off_nothing_is_kept_or_sent(client: httpx.AsyncClient, uow: UnitOfWork) -> None:
    assert not tracing.enabled()
    answer = await client.post("/things/lamp/changes", headers={**OWNER, "traceparent": TRACEPARENT})
    assert answer.status_code == 202
    assert all(row.trace_context is None for row in await outbox(uow))
    assert all(record.headers == [] for record in await relayed(uow))
