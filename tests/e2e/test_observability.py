"""Metrics and traces of a running ``gantry up``: a Pipeline Hook sent with a ``traceparent`` makes a
version, auto-released and auto-deployed; every one of the five services sends spans of that one
trace to an OTLP receiver, and each service's ``/metrics`` (scraped on its own port, parsed with
Prometheus' parser) counts the chain's hops, its whole-chain latency and the deployment's outcome.
"""

from __future__ import annotations

import os

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.settings import SERVICES
from tests.e2e.stack import Stack, post_pipeline_hook
from tests.e2e.test_chain import until
from tests.otlp_receiver import OtlpReceiver
from tests.support import eventually

pytestmark = pytest.mark.e2e

PROJECT, SERVICE, ENV = "optics", "lens", "qa"
# topic -> the services whose agents handle it in this chain
HOPS = {
    "gitlab.hook.received": ("versioning",),
    "pipeline.succeeded": ("versioning",),
    "version.created": ("release",),
    "version.released": ("deploy",),
    "deploy.requested": ("deploy",),
    "deploy.status": ("catalog", "release"),  # the gateway's part is the hook's request (and its live stream)
}


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver):
    running = Stack(tmp_path_factory.mktemp("observability"))
    running.env["GANTRY_OTLP_ENDPOINT"] = receiver.endpoint
    running.env["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # export each batch of spans within 0.2 s
    with running:
        yield running


async def _ready_for_auto_deploy(api: httpx.AsyncClient, stack: Stack, traceparent: str) -> dict:
    """Project, service, environment, release with auto-release, a first version deployed by hand, auto-deploy on."""
    assert (
        await api.post("/api/catalog/projects", json={"code": PROJECT, "name": "Optics", "gitlab_group": "acme"})
    ).status_code == 201
    created = await api.post(
        f"/api/catalog/projects/{PROJECT}/services",
        json={"code": SERVICE, "name": "Lens", "group": "com.acme.optics", "type": "python-fastapi"},
    )
    assert created.status_code == 201, created.text
    assert (
        await api.post("/api/release/environments", json={"code": ENV, "name": "QA", "tier": "staging"})
    ).status_code == 201
    base = f"/api/release/projects/{PROJECT}/services/{SERVICE}"
    await until(lambda: api.post(f"{base}/releases", json={"environment": ENV}), 201)
    assert (await api.put(f"{base}/auto-release", json={"enabled": True})).status_code == 200
    await post_pipeline_hook(api, created.json(), 1)
    first = await stack.wait_for_version(api, PROJECT, SERVICE, 1)
    made = await api.post(
        f"/api/deploy/environments/{ENV}/resources",
        json={"name": "lens-db", "type": "database", "data": {"url": "postgresql://db/lens"}},
    )
    assert made.status_code == 201, made.text
    deployment = {
        "project": PROJECT,
        "service": SERVICE,
        "environment": ENV,
        "version": first["name"],
        "resources": ["lens-db"],
    }
    traced = {"traceparent": traceparent}  # the gateway's proxy passes the request's trace on
    await until(lambda: api.post("/api/deploy/deployments", json=deployment, headers=traced), 202)
    running = f"/api/deploy/environments/{ENV}/projects/{PROJECT}/services/{SERVICE}"
    assert (await api.put(f"{running}/auto-deploy", json={"enabled": True})).status_code == 200
    return created.json()


async def scrape(stack: Stack, service: str) -> dict[str, list]:
    port = stack.port_base + SERVICES.index(service)
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert answer.status_code == 200, answer.text
    return {family.name: family.samples for family in text_string_to_metric_families(answer.text)}


def count(families: dict[str, list], sample: str, **labels: str) -> float:
    family = sample.removesuffix("_count").removesuffix("_total")
    return sum(
        s.value
        for s in families.get(family, [])
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_one_chain_is_one_trace_across_the_five_services_and_its_hops_are_measured(
    stack: Stack, receiver: OtlpReceiver
) -> None:
    trace_id, deploy_trace = os.urandom(16).hex(), os.urandom(16).hex()
    async with stack.client() as api:
        service = await _ready_for_auto_deploy(api, stack, f"00-{deploy_trace}-{os.urandom(8).hex()}-01")
        traceparent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
        await post_pipeline_hook(api, service, 2, headers={"traceparent": traceparent})
        await stack.wait_for_version(api, PROJECT, SERVICE, 2)

    async def whole_trace() -> set[str] | None:
        names = {(span.service, span.name) for span in receiver.of_trace(trace_id)}
        wanted = {(svc, f"{topic} process") for topic, services in HOPS.items() for svc in services}
        return names if wanted <= names else None

    spans = await eventually(whole_trace, timeout=60, interval=0.2)
    assert {svc for svc, _name in spans} == set(SERVICES), spans
    assert ("gateway", "POST /webhooks/gitlab") in spans, "the hook's request is the trace's first span"
    assert ("deploy", "deploy.status publish") in spans

    async def proxied() -> set[tuple[str, str]] | None:
        names = {(span.service, span.name) for span in receiver.of_trace(deploy_trace)}
        return names if ("deploy", "POST /deployments") in names else None

    through_gateway = await eventually(proxied, timeout=30, interval=0.2)
    assert ("gateway", "POST /api/{service}/{path}") in through_gateway
    assert ("gateway", "audit.recorded process") in through_gateway, "the deployment's audit record, too"
    assert ("deploy", "deploy.requested process") in through_gateway, "a manual deployment's chain is its trace"

    async def chain_measured() -> dict[str, dict[str, list]] | None:
        scraped = {name: await scrape(stack, name) for name in SERVICES}
        measured = all(
            count(scraped[svc], "gantry_event_hop_seconds_count", topic=topic) >= 1
            and count(scraped[svc], "gantry_event_chain_seconds_count", topic=topic) >= 1
            for topic, services in HOPS.items()
            for svc in services
        )
        return scraped if measured else None

    scraped = await eventually(chain_measured, timeout=30, interval=0.5)
    assert count(scraped["deploy"], "gantry_deployments_total", outcome="rendered") >= 2  # by hand, then auto
    assert (
        count(scraped["gateway"], "gantry_http_request_duration_seconds_count", route="/webhooks/gitlab", status="202")
        >= 2
    )
    assert scraped["versioning"]["gantry_outbox_pending_rows"][0].value >= 0
    lags = scraped["release"].get("gantry_consumer_lag_records", [])
    assert {s.labels["topic"] for s in lags} >= {"version.created"}, "lag is reported per consumed partition"
