"""The front door: forwards ``/api/<service>/…`` to the platform's services (GitLab's webhook is
taken here too, by ``shared.webhook_door``).

One shared ``httpx.AsyncClient`` (opened with the service, closed on stop) carries every call;
the upstream answer is streamed back as it arrives, so nothing here holds the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from shared import tracing
from shared.api_docs import FORWARDED_PREFIX
from shared.logging import get_logger
from shared.problems import problem_response
from shared.service import Part, Runtime, RuntimeDep

log = get_logger(__name__)
HTTP: Part[httpx.AsyncClient] = Part("http")  # the one client every forwarded call shares
router = APIRouter(tags=["proxy"])

UPSTREAMS = ("catalog", "versioning", "release", "deploy")
TIMEOUT_SECONDS = 30.0
SLOW_TIMEOUT_SECONDS = 90.0  # catalog creates (and archives) repositories while the caller waits
REQUEST_HEADERS = ("authorization", "content-type", "accept", "idempotency-key", "x-correlation-id")
RESPONSE_HEADERS = (
    "content-type",
    "content-encoding",
    "content-length",
    "location",
    "retry-after",
    "cache-control",
    "content-disposition",
    "etag",
    "last-modified",
    "allow",  # a 405's methods
)


@asynccontextmanager
async def http_client(runtime: Runtime) -> AsyncIterator[None]:
    """The one client every forwarded call shares (keep-alive pool to the services)."""
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(TIMEOUT_SECONDS, connect=5.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=40),
        follow_redirects=False,
        trust_env=False,  # the services are on loopback: never through an HTTP proxy
    ) as client:
        HTTP.provide(runtime, client)
        yield


@router.api_route(
    "/api/{service}/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
    include_in_schema=False,
)
async def forward_api(service: str, path: str, request: Request, runtime: RuntimeDep) -> Response:
    """Forward a call to one of the platform's services."""
    if service == "gateway":
        return _detail(404, f"the gateway has no endpoint /{path}: see /docs for its routes")
    if service not in UPSTREAMS:
        return _detail(404, f"unknown service {service!r}: use one of {', '.join((*UPSTREAMS, 'gateway'))}")
    if path.strip("/") == "metrics":  # operations' view, not the public API's: Prometheus scrapes each port
        return _detail(404, f"/metrics is not forwarded: scrape the {service} service on its own port (its /metrics)")
    slow = service == "catalog" and request.method in ("POST", "DELETE")
    return await forward(
        request,
        runtime,
        service,
        _raw_rest(request, f"/api/{service}"),
        timeout=SLOW_TIMEOUT_SECONDS if slow else TIMEOUT_SECONDS,
    )


async def forward(
    request: Request,
    runtime: Runtime,
    service: str,
    raw_path: str,
    *,
    timeout: float = TIMEOUT_SECONDS,
) -> Response:
    client = HTTP.of(runtime)
    base = runtime.settings.service_url(service)
    url = base + raw_path + (f"?{request.url.query}" if request.url.query else "")
    outgoing = _request_headers(request, service)
    upstream_request = client.build_request(
        request.method, url, headers=outgoing, content=await request.body(), timeout=timeout
    )
    try:
        upstream = await client.send(upstream_request, stream=True)
    except (httpx.ConnectError, httpx.ConnectTimeout):
        return _unreachable(service, base)
    except httpx.TimeoutException:
        return _detail(504, f"the {service} service did not answer within {timeout:.0f} s: try again")
    except httpx.HTTPError as exc:
        return _detail(502, f"the {service} service answered badly ({exc.__class__.__name__}): try again")
    passed = {k: v for k, v in upstream.headers.items() if k.lower() in RESPONSE_HEADERS}
    return StreamingResponse(
        _relay(upstream),
        status_code=upstream.status_code,
        headers=passed,
        background=BackgroundTask(upstream.aclose),
    )


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:  # also when the caller went away mid-answer: give the connection back
        await upstream.aclose()


def _request_headers(request: Request, service: str) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() in REQUEST_HEADERS}
    headers["x-correlation-id"] = request.state.correlation_id
    headers.update(tracing.current_carrier())  # the service behind continues this request's trace
    headers[FORWARDED_PREFIX] = f"/api/{service}"  # the service's docs name the gateway's address
    if request.client is not None:
        headers["x-forwarded-for"] = request.client.host
    return headers


def _raw_rest(request: Request, prefix: str) -> str:
    """The path after ``prefix`` exactly as the caller encoded it (``%2F`` stays ``%2F``)."""
    raw = request.scope.get("raw_path")
    text = raw.decode("latin-1") if raw else request.url.path
    text = text.split("?", 1)[0]
    return text[len(prefix) :] if text.startswith(prefix) else "/" + request.path_params["path"]


def _unreachable(service: str, url: str) -> JSONResponse:
    log.warning("upstream service not reachable", upstream=service, url=url)
    return _detail(503, f"the {service} service is not reachable at {url}: is it running? (gantry up starts it)")


def _detail(status: int, detail: str) -> JSONResponse:
    return problem_response(status, detail)
