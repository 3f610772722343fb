"""OpenTelemetry traces: one chain, one trace, across the five services.

A request's ``traceparent`` (W3C) starts its server span; the events its transaction emits keep that
context in their outbox rows, and the relay, publishing later, sends it in the records' Kafka
headers; a consumer continues the trace from them, and so on down the chain. Spans are exported by
OTLP over HTTP to ``GANTRY_OTLP_ENDPOINT`` (or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``). With
neither set nothing is configured: no span is made, no header is read or written, and the outbox
keeps no context.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from shared.logging import get_logger

log = get_logger(__name__)
Headers = list[tuple[str, bytes]]
_STATE: dict[str, Any] = {}


def configure_tracing(service: str, endpoint: str | None, *, exporter: Any = None) -> Any:
    """Export this service's spans to ``endpoint`` (an OTLP/HTTP base URL; else the standard
    variable), or to ``exporter`` as they end. Returns the provider to shut down at stop, or None
    when tracing stays off."""
    endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    _STATE.clear()
    if not endpoint and exporter is None:
        return None
    # imported only when traces are on: the SDK and the exporter cost nothing otherwise
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.namespace": "gantry"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        assert endpoint is not None
        otlp = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(otlp))
        log.info("traces exported by OTLP", endpoint=endpoint)
    _STATE["tracer"] = provider.get_tracer("gantry")
    return provider


def enabled() -> bool:
    return "tracer" in _STATE


def _tracer() -> trace.Tracer:
    tracer: trace.Tracer = _STATE["tracer"]
    return tracer


@contextmanager
def server_span(method: str, headers: Mapping[str, str]) -> Iterator[Span | None]:
    """The span of one HTTP request, continuing the caller's ``traceparent`` when it sent one."""
    if not enabled():
        yield None
        return
    parent = propagate.extract(headers)
    with _tracer().start_as_current_span(method, context=parent, kind=SpanKind.SERVER) as span:
        yield span


def name_server_span(span: Span | None, method: str, route: str, status: int) -> None:
    if span is None:
        return
    span.update_name(f"{method} {route}")
    span.set_attribute("http.request.method", method)
    span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def current_context() -> str | None:
    """The current trace context as a small JSON carrier, kept with an outbox row; None when off."""
    if not enabled():
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier) if carrier else None


def current_carrier() -> dict[str, str]:
    """HTTP headers carrying the current trace context (``traceparent``); empty when off."""
    carrier: dict[str, str] = {}
    if enabled():
        propagate.inject(carrier)
    return carrier


def current_headers() -> Headers:
    """Kafka headers carrying the current trace context (a record published now, not by the relay)."""
    if not enabled():
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()]


def relay_headers(stored: str | None, topic: str, created_at: datetime) -> Headers:
    """Headers for an outbox row the relay sends now: a producer span from the row's creation to
    now, child of the context the row was written in, whose context the consumers continue."""
    if not enabled() or not stored:
        return []
    parent = propagate.extract(json.loads(stored))
    span = _tracer().start_span(
        f"{topic} publish",
        context=parent,
        kind=SpanKind.PRODUCER,
        start_time=int(created_at.timestamp() * 1e9),
        attributes={"messaging.system": "kafka", "messaging.destination.name": topic},
    )
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    span.end()
    return [(key, value.encode()) for key, value in carrier.items()]


def stored_headers(stored: str | None) -> Headers:
    """The trace context an outbox row was written in (``current_context``), as the headers a
    consumer span continues: for an event applied in the batch that emitted it (``shared.bus.folded``)."""
    if not enabled() or not stored:
        return []
    return [(key, str(value).encode()) for key, value in json.loads(stored).items()]


@contextmanager
def consumer_span(topic: str, headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None) -> Iterator[None]:
    """The span of handling one consumed record, continuing the trace its headers carry."""
    if not enabled():
        yield
        return
    pairs = headers.items() if isinstance(headers, Mapping) else headers or []
    carrier = {key.lower(): value.decode(errors="replace") for key, value in pairs if value is not None}
    parent = propagate.extract(carrier)
    attributes = {"messaging.system": "kafka", "messaging.destination.name": topic}
    with _tracer().start_as_current_span(
        f"{topic} process", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ):
        yield
