"""``GET /metrics``: a small service built with ``create_service_app`` as every Gantry service is,
on a real SQLite database, scraped over HTTP and read back with Prometheus' own parser."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared import bus, metrics
from shared.consume import handle_batch
from shared.errors import PoisonEvent
from shared.events import PipelineSucceeded, Topic, new_event, utcnow
from shared.logging import configure_logging
from shared.outbox import OutboxDeadLetter, OutboxRelay, UnitOfWork, add_event
from shared.settings import Settings
from tests.unit.things_service import OWNER, things_client


@pytest.fixture
async def uow(make_uow) -> UnitOfWork:
    return await make_uow("things", [])


@pytest.fixture
async def client(uow: UnitOfWork, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with things_client(uow, Settings(home=tmp_path)) as http:
        yield http


async def scrape(client: httpx.AsyncClient) -> dict[str, list]:
    """Metric family name -> its samples, as Prometheus reads the exposition."""
    answer = await client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(answer.text)}


def value(samples: list, name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found)


async def test_requests_are_counted_by_route_template_method_and_status(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    count = "gantry_http_request_duration_seconds_count"
    template = {"method": "GET", "route": "/things/{name}"}
    start_ok = value(before["gantry_http_request_duration_seconds"], count, status="200", **template)
    start_missing = value(before["gantry_http_request_duration_seconds"], count, status="404", **template)
    for name in ("lamp", "chair"):
        assert (await client.get(f"/things/{name}", headers=OWNER)).status_code == 200
    assert (await client.get("/things/missing", headers=OWNER)).status_code == 404
    assert (await client.get("/no/such/path")).status_code == 404
    after = (await scrape(client))["gantry_http_request_duration_seconds"]
    assert value(after, count, status="200", **template) == start_ok + 2
    assert value(after, count, status="404", **template) == start_missing + 1
    assert value(after, count, route="unmatched", status="404") >= 1
    routes = {sample.labels.get("route") for sample in after}
    assert "/things/lamp" not in routes and "/no/such/path" not in routes, "paths asked never become labels"
    assert value(after, "gantry_http_request_duration_seconds_bucket", le="+Inf", status="200", **template) >= 2


async def test_the_outbox_shows_what_waits_how_old_the_oldest_is_and_what_is_dead_lettered(
    client: httpx.AsyncClient, uow: UnitOfWork
) -> None:
    for name in ("lamp", "chair"):
        assert (await client.post(f"/things/{name}/changes", headers=OWNER)).status_code == 202
    async with uow.begin() as session:
        session.add(
            OutboxDeadLetter(
                outbox_id=99,
                event_id="e-99",
                topic="service.changed",
                key="s9",
                payload="{}",
                created_at=utcnow() - timedelta(minutes=5),
                attempts=3,
                reason="MessageSizeTooLargeError",
            )
        )
    families = await scrape(client)
    assert families["gantry_outbox_pending_rows"][0].value >= 2  # the audit trail's records wait too
    assert 0 <= families["gantry_outbox_oldest_pending_age_seconds"][0].value < 60
    assert families["gantry_outbox_dead_letters"][0].value == 1


async def test_a_handled_event_times_its_hop_and_its_chain_and_a_poison_one_is_counted(
    client: httpx.AsyncClient,
) -> None:
    data = PipelineSucceeded(service_id="s1", project="p", service="s", pipeline_id=1, ref="main", sha="a")
    first = new_event(Topic.PIPELINE_SUCCEEDED, data, source="t", subject="p/s")
    aged_first = first.model_copy(update={"time": utcnow() - timedelta(seconds=40)})
    caused = new_event(Topic.VERSION_CREATED, data, source="t", subject="p/s", cause=aged_first)
    assert caused.chain_started == aged_first.time, "a caused event carries when its chain began"
    before = await scrape(client)

    async def handled(_envelope):
        return None

    async def poison(_envelope):
        raise PoisonEvent("unusable")

    dlq = SimpleNamespace(dead_letter=_no_op)
    await bus.handle_record("version.created", b"s1", caused.model_dump_json().encode(), handled, dlq)
    await bus.handle_record("version.created", b"s1", caused.model_dump_json().encode(), poison, dlq)
    after = await scrape(client)
    hop = "gantry_event_hop_seconds"
    chain = "gantry_event_chain_seconds"
    assert (
        value(after[hop], f"{hop}_count", topic="version.created")
        == value(before[hop], f"{hop}_count", topic="version.created") + 1
    )
    assert value(after[hop], f"{hop}_bucket", topic="version.created", le="5.0") > value(
        before[hop], f"{hop}_bucket", topic="version.created", le="5.0"
    ), "the hop is short: the event was made just now"
    assert value(after[chain], f"{chain}_bucket", topic="version.created", le="30.0") == value(
        before[chain], f"{chain}_bucket", topic="version.created", le="30.0"
    ), "the chain is long: it began 40 s ago"
    assert (
        value(after[chain], f"{chain}_count", topic="version.created")
        == value(before[chain], f"{chain}_count", topic="version.created") + 1
    )
    dead = "gantry_events_dead_lettered"
    assert (
        value(after[dead], f"{dead}_total", topic="version.created", reason="poison")
        == value(before.get(dead, []), f"{dead}_total", topic="version.created", reason="poison") + 1
    )


async def test_each_batch_counts_its_events_and_its_time_and_each_relay_cycle_its_rows(
    client: httpx.AsyncClient, uow: UnitOfWork
) -> None:
    """Ops see how a consumer takes its events (many small batches, or few large ones) and how
    much each relay cycle sends: ``gantry_batch_events``, ``gantry_batch_seconds`` and
    ``gantry_outbox_relayed_rows``."""
    data = PipelineSucceeded(service_id="s1", project="p", service="s", pipeline_id=1, ref="main", sha="a")
    records = [
        (b"s1", new_event(Topic.PIPELINE_SUCCEEDED, data, source="t", subject="p/s").model_dump_json().encode(), None)
        for _ in range(3)
    ]
    async with uow.begin() as session:
        for _ in range(2):
            add_event(
                session,
                Topic.PIPELINE_SUCCEEDED,
                new_event(Topic.PIPELINE_SUCCEEDED, data, source="t", subject="p/s"),
                key="s1",
            )
    before = await scrape(client)
    await handle_batch("pipeline.succeeded", records, _handled, SimpleNamespace(dead_letter=_no_op), uow)

    async def broker(sent: list) -> list[None]:
        return [None] * len(sent)

    assert await OutboxRelay(uow.sessions, broker).relay_once() == 2
    assert await OutboxRelay(uow.sessions, broker).relay_once() == 0  # nothing sent: not a cycle counted
    after = await scrape(client)

    def grew(family: str, sample: str, **labels: str) -> float:
        return value(after[family], sample, **labels) - value(before.get(family, []), sample, **labels)

    fetched = {"topic": "pipeline.succeeded", "way": metrics.FETCHED}
    assert grew("gantry_batch_events", "gantry_batch_events_count", **fetched) == 1
    assert grew("gantry_batch_events", "gantry_batch_events_sum", **fetched) == 3
    assert grew("gantry_batch_seconds", "gantry_batch_seconds_count", **fetched) == 1
    assert 0 < grew("gantry_batch_seconds", "gantry_batch_seconds_sum", **fetched) < 30
    assert grew("gantry_outbox_relayed_rows", "gantry_outbox_relayed_rows_count") == 1
    assert grew("gantry_outbox_relayed_rows", "gantry_outbox_relayed_rows_sum") == 2


async def _handled(_envelope) -> None:
    return None


async def _count_then_fail(uow: UnitOfWork) -> None:
    async with uow.begin() as session:
        metrics.count_on_commit(session, "deploy", "failed")
        raise RuntimeError("rolled back")


async def _count_in_a_savepoint_then_fail(session) -> None:  # type: ignore[no-untyped-def]
    async with session.begin_nested():
        metrics.count_on_commit(session, "scale", "lost")
        raise RuntimeError("the use case failed after recording")


async def test_an_outcome_recorded_in_a_savepoint_that_rolled_back_is_not_counted(
    client: httpx.AsyncClient, uow: UnitOfWork
) -> None:
    # a batch's use case that fails after recording its outcome rolls back its savepoint only
    def counted(outcome: str) -> float:
        return value(scraped["gantry_deployments"], "gantry_deployments_total", action="scale", outcome=outcome)

    scraped = await scrape(client)
    before = {outcome: counted(outcome) for outcome in ("kept", "lost")}
    async with uow.begin() as session:
        metrics.count_on_commit(session, "scale", "kept")
        with pytest.raises(RuntimeError):
            await _count_in_a_savepoint_then_fail(session)
    scraped = await scrape(client)
    assert counted("kept") == before["kept"] + 1
    assert counted("lost") == before["lost"], "the rolled-back savepoint's outcome is not counted"


async def _no_op(*_args) -> None:
    return None


async def test_deployment_outcomes_count_once_their_transaction_committed(
    client: httpx.AsyncClient, uow: UnitOfWork
) -> None:
    before = value((await scrape(client)).get("gantry_deployments", []), "gantry_deployments_total", action="deploy")
    async with uow.begin() as session:
        metrics.count_on_commit(session, "deploy", "succeeded")
    with pytest.raises(RuntimeError):
        await _count_then_fail(uow)
    after = (await scrape(client))["gantry_deployments"]
    assert value(after, "gantry_deployments_total", action="deploy", outcome="succeeded") >= 1
    assert value(after, "gantry_deployments_total", action="deploy") == before + 1, "a rolled-back one is not counted"


async def test_each_request_writes_one_access_line_and_scrapes_stay_quiet(client: httpx.AsyncClient, capsys) -> None:
    configure_logging("things")
    capsys.readouterr()
    headers = {**OWNER, "x-correlation-id": "c-42"}
    assert (await client.get("/things/lamp", headers=headers)).status_code == 200
    await client.get("/metrics")
    await client.get("/healthz")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "gantry.access"]
    assert len(access) == 1, access
    (line,) = access
    assert (line["method"], line["path"], line["route"], line["status"]) == (
        "GET",
        "/things/lamp",
        "/things/{name}",
        200,
    )
    assert (line["user"], line["correlation_id"], line["service"]) == ("olga", "c-42", "things")
    assert line["duration_ms"] >= 0 and line["level"] == "info"


async def test_with_a_metrics_token_only_a_scraper_that_sends_it_is_answered(uow: UnitOfWork, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, metrics_token="scrape-token-0123456789")
    async with things_client(uow, settings) as http:
        assert (await http.get("/metrics")).status_code == 401
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer another-token-0123456789"})
        assert wrong.status_code == 401 and "GANTRY_METRICS_TOKEN" in wrong.json()["detail"]
        assert (await http.get("/metrics", headers=OWNER)).status_code == 401, "a user's token is not the scraper's"
        right = await http.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"})
        assert right.status_code == 200 and "gantry_outbox_pending_rows" in right.text


def test_each_garbage_collection_is_timed_by_generation_once() -> None:
    metrics.watch_garbage_collections()
    metrics.watch_garbage_collections()  # a second service start in the same process adds nothing
    assert gc.callbacks.count(metrics._timed_collection) == 1
    child = metrics.GC_PAUSE_SECONDS.labels(generation="2")
    before_count, before_sum = _histogram(child)
    gc.collect(2)
    gc.collect(2)
    after_count, after_sum = _histogram(child)
    assert after_count == before_count + 2 and after_sum > before_sum


def _histogram(child) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    samples = {sample.name: sample.value for metric in child.collect() for sample in metric.samples}
    return samples["gantry_gc_pause_seconds_count"], samples["gantry_gc_pause_seconds_sum"]
