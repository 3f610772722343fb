"""One request, seen from outside: its access log line, its duration histogram, its trace span.

The outermost middleware of every service. It continues the caller's ``traceparent`` (when traces
are exported), times the request until its answer begins (so a live event stream is not counted
for as long as it stays open), and writes one JSON line: method, path, route template, status,
duration in ms, user and correlation id (and what came of the request, when its handler says so:
``note_outcome``). Probes and scrapes (``/metrics``, ``/healthz``,
``/readyz``) are logged at debug level only, so they do not drown the lines that matter.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics, tracing
from shared.logging import get_logger

log = get_logger("gantry.access")
UNMATCHED = "unmatched"  # a path no route took: never the path itself, which could be anything
OUTCOME = "gantry_outcome"  # in the request's state: what its access line says came of it (``note_outcome``)


def note_outcome(state: Any, event: str, **fields: object) -> None:
    """Say what came of a request in its access line: ``event`` instead of "request", with
    ``fields`` beside the request's own, where a line of its own would cost the request as much
    again (the webhook door: one line per hook, "hook queued", not two). ``state`` is the
    request's ``request.state``; ``fields`` are named apart from the line's own (``status`` is the
    answer's: a pipeline's is ``pipeline_status``)."""
    setattr(state, OUTCOME, (event, fields))


class RequestObserver:
    """Pure ASGI middleware: access log line, request metrics and the request's server span."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered: dict[str, Any] = {"status": 500, "seconds": None}

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
                answered["seconds"] = time.perf_counter() - started
            await send(message)

        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        with tracing.server_span(scope["method"], headers) as span:
            try:
                await self.app(scope, receive, timed_send)
            finally:
                seconds = answered["seconds"] if answered["seconds"] is not None else time.perf_counter() - started
                route = route_template(scope)
                tracing.name_server_span(span, scope["method"], route, answered["status"])
                _record(scope, route, answered["status"], seconds)


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template else UNMATCHED


def _record(scope: Scope, route: str, status: int, seconds: float) -> None:
    method, path = scope["method"], scope["path"]
    metrics.observe_request(method, route, status, seconds)
    state = scope.get("state") or {}
    quiet = path in metrics.SKIPPED_ROUTES and status < 400
    event, fields = state.get(OUTCOME) or ("request", {})
    (log.debug if quiet else log.info)(
        event,
        method=method,
        path=path,
        route=route,
        status=status,
        duration_ms=round(seconds * 1000, 1),
        user=state.get("user"),
        correlation_id=state.get("correlation_id"),
        **fields,
    )
