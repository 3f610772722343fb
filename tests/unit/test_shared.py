"""shared/: settings, tokens and roles, the outbox relay, and how agents treat bad events."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from datetime import datetime, timedelta

import jwt
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from pydantic import ValidationError
from sqlalchemy import JSON
from sqlmodel import Field, SQLModel, select

from shared import bus
from shared.auth import Principal, issue_token, parse_authorization, verify_token, webhook_secret
from shared.db import quick_default_factories
from shared.errors import Forbidden, InvalidInput, NotAuthenticated, PoisonEvent
from shared.events import Envelope, PipelineSucceeded, RouteChanged, Topic, VersionCreated, new_event, utcnow
from shared.logging import configure_logging
from shared.outbox import (
    MAX_ATTEMPTS,
    HeldBack,
    InboxEntry,
    OutboxMessage,
    OutboxRelay,
    add_event,
    claim_inbox,
    dead_letters,
    discard_dead_letter,
    emit,
    retry_dead_letter,
)
from shared.settings import Settings
from tests.support import SECRET, eventually
from tests.unit.conftest import outbox, reads_of


def test_settings_fail_fast_with_the_variable_named(monkeypatch):
    with pytest.raises(ValidationError, match="GANTRY_KAFKA_BOOTSTRAP"):
        Settings(kafka_bootstrap="localhost")
    with pytest.raises(ValidationError, match="GANTRY_DATABASE_URL"):
        Settings(database_url="mysql://x")
    with pytest.raises(ValidationError, match="GANTRY_GITLAB_URL and GANTRY_GITLAB_TOKEN"):
        Settings(gitlab_url="https://gitlab.example.com")
    assert Settings(database_url="postgres://u@h/db").database_url == "postgresql+asyncpg://u@h/db"
    with pytest.raises(RuntimeError, match="gantry up"):
        Settings().require_bootstrap()


def test_installation_secret_is_generated_once(tmp_path):
    first = Settings(home=tmp_path).installation_secret()
    assert first == Settings(home=tmp_path).installation_secret() and len(first) >= 32
    assert (tmp_path / "secret").stat().st_mode & 0o077 == 0


def test_tokens_and_roles():
    principal = verify_token(SECRET, issue_token(SECRET, "olga", ["shop:project-owner", "deploy-admin"]))
    assert principal == Principal("olga", frozenset({"shop:project-owner", "deploy-admin"}))
    principal.require_project("shop", "project-owner")
    principal.require_org("deploy-admin")
    with pytest.raises(Forbidden, match="other:project-member"):
        principal.require_project("other", "project-member")
    with pytest.raises(Forbidden):
        Principal("max", frozenset({"shop:project-member"})).require_org("deploy-admin")
    Principal("root", frozenset({"org-admin"})).require_project("any", "project-owner")


async def test_bad_tokens_are_401_with_a_way_out():
    with pytest.raises(NotAuthenticated, match="gantry token issue"):
        await parse_authorization(SECRET, None)
    with pytest.raises(NotAuthenticated, match="not valid"):
        await parse_authorization(SECRET, "Bearer " + issue_token("another-secret-of-32-bytes-length!!", "a", []))
    with pytest.raises(NotAuthenticated, match="not a JWT"):
        await parse_authorization(SECRET, "Bearer hunter2")
    expired = jwt.encode(
        {"iss": "gantry", "sub": "a", "roles": [], "exp": int(time.time()) - 10}, SECRET, algorithm="HS256"
    )
    with pytest.raises(NotAuthenticated, match="expired"):
        verify_token(SECRET, expired)
    with pytest.raises(InvalidInput, match="unknown role"):
        issue_token(SECRET, "a", ["admin"])


def test_webhook_secret_is_per_gitlab_project_and_stable():
    assert webhook_secret(SECRET, "42") == webhook_secret(SECRET, "42") != webhook_secret(SECRET, "43")
    assert webhook_secret(SECRET, "42") != webhook_secret("another-installation-secret", "42")


def test_a_token_without_expiry_is_refused_and_none_is_issued_already_expired():
    forever = jwt.encode({"iss": "gantry", "sub": "eve", "roles": ["org-admin"]}, SECRET, algorithm="HS256")
    with pytest.raises(NotAuthenticated, match="exp"):
        verify_token(SECRET, forever)
    for hours in (0, -1):
        with pytest.raises(InvalidInput, match="valid for some time"):
            issue_token(SECRET, "a", ["org-admin"], ttl_seconds=hours * 3600)


def _event(pipeline_id: int) -> Envelope:
    data = PipelineSucceeded(service_id="s1", project="p", service="s", pipeline_id=pipeline_id, ref="main", sha="a")
    return new_event(Topic.PIPELINE_SUCCEEDED, data, source="test", subject="p/s")


async def test_relay_publishes_in_order_and_keeps_rows_when_the_broker_fails(make_uow):
    uow = await make_uow("relaytest", [])
    async with uow.begin() as session:
        for pipeline_id in (1, 2, 3):
            add_event(session, Topic.PIPELINE_SUCCEEDED, _event(pipeline_id), key="s1")
    sent: list[tuple[str, str, bytes]] = []

    async def broker_down(records):
        return [KafkaConnectionError("broker unreachable") for _ in records]

    with pytest.raises(KafkaConnectionError):
        await OutboxRelay(uow.sessions, broker_down).relay_once()
    assert all(row.published_at is None for row in await outbox(uow)), "nothing marked published, nothing lost"

    async def broker(records):
        sent.extend(records)
        return [None for _ in records]

    assert await OutboxRelay(uow.sessions, broker).relay_once() == 3
    assert [json.loads(value)["data"]["pipeline_id"] for _topic, _key, value in sent] == [1, 2, 3]
    assert {key for _t, key, _v in sent} == {"s1"}
    assert await OutboxRelay(uow.sessions, broker).relay_once() == 0, "published rows are not sent again"


async def test_rows_after_an_outage_in_a_batch_are_sent_again_after_it(make_uow):
    uow = await make_uow("relaytest", [])
    async with uow.begin() as session:
        for pipeline_id in (1, 2, 3):
            add_event(session, Topic.PIPELINE_SUCCEEDED, _event(pipeline_id), key="s1")

    async def second_times_out(records):
        return [None, KafkaConnectionError("timed out"), None][: len(records)]

    assert await OutboxRelay(uow.sessions, second_times_out).relay_once() == 1
    unpublished = [json.loads(row.payload)["data"]["pipeline_id"] for row in await outbox(uow) if not row.published_at]
    assert unpublished == [2, 3], "the row after the failed one is not marked: it goes again, after it"


class LockHeldOnce(OutboxRelay):
    """A relay whose first try finds another instance holding the outbox lock (PostgreSQL's
    advisory lock, which SQLite has no counterpart of)."""

    tries = 0

    async def _exclusive(self, session):
        self.tries += 1
        return self.tries > 1


async def test_a_relay_that_found_the_lock_held_looks_again_soon_not_at_its_poll(make_uow):
    uow = await make_uow("relaytest", [])
    async with uow.begin() as session:
        add_event(session, Topic.PIPELINE_SUCCEEDED, _event(1), key="s1")
    sent: list[tuple[str, str, bytes]] = []

    async def broker(records):
        sent.extend(records)
        return [None for _ in records]

    async def published() -> bool:
        return len(sent) == 1

    relay = LockHeldOnce(uow.sessions, broker, poll_interval=60)
    relay.start()
    try:
        await eventually(published, timeout=5)  # without the quick retry: only at the 60 s poll
    finally:
        await relay.stop()
    assert all(row.published_at for row in await outbox(uow))


class SizeLimitedBroker:
    """Answers as ``bus.Producer.send_batch`` does: a record over the limit is refused before it is
    sent, and holds back the records of its key behind it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[tuple[str, str, bytes]] = []

    async def __call__(self, records):
        outcomes, refused = [], set()
        for record in records:
            if record[1] in refused:
                outcomes.append(HeldBack(record[1]))
            elif len(record[2]) > self.limit:
                outcomes.append(MessageSizeTooLargeError(f"{len(record[2])} bytes"))
                refused.add(record[1])
            else:
                self.sent.append(record)
                outcomes.append(None)
        return outcomes


async def _relay_until_quiet(relay: OutboxRelay, rounds: int = MAX_ATTEMPTS + 2) -> None:
    for _ in range(rounds):
        await relay.relay_once()


def _huge_event() -> Envelope:
    data = PipelineSucceeded(
        service_id="s1", project="p", service="s", pipeline_id=1, ref="main", sha="a", commit_message="x" * 5000
    )
    return new_event(Topic.PIPELINE_SUCCEEDED, data, source="test", subject="p/s")


async def _queue(uow, *keyed: tuple[str, Envelope]) -> None:
    async with uow.begin() as session:
        for key, envelope in keyed:
            add_event(session, Topic.PIPELINE_SUCCEEDED, envelope, key=key)


async def test_a_row_too_large_is_dead_lettered_and_blocks_only_its_own_key(make_uow):
    # "nothing stuck behind one bad event": other services' events go on, the key's own wait in order
    uow = await make_uow("relaytest", [])
    await _queue(uow, ("big", _huge_event()), ("big", _event(2)), ("other", _event(3)))
    broker = SizeLimitedBroker(limit=2000)
    relay = OutboxRelay(uow.sessions, broker)
    await _relay_until_quiet(relay)
    assert [(key, json.loads(v)["data"]["pipeline_id"]) for _t, key, v in broker.sent] == [("other", 3)]
    [dead] = await dead_letters(uow.sessions)
    assert dead.key == "big" and dead.attempts == MAX_ATTEMPTS and "MessageSizeTooLargeError" in dead.reason
    assert (await relay.pending(), await relay.held()) == (0, 1), "the key's next row waits behind it"

    await discard_dead_letter(uow, dead.outbox_id)
    await _relay_until_quiet(relay, rounds=1)
    assert [json.loads(v)["data"]["pipeline_id"] for _t, _k, v in broker.sent] == [3, 2]
    assert await dead_letters(uow.sessions) == []


async def test_a_retried_dead_letter_goes_before_the_rows_that_waited_behind_it(make_uow):
    uow = await make_uow("relaytest", [])
    await _queue(uow, ("s1", _huge_event()), ("s1", _event(2)))
    broker = SizeLimitedBroker(limit=2000)
    await _relay_until_quiet(OutboxRelay(uow.sessions, broker))
    [dead] = await dead_letters(uow.sessions)
    broker.limit = 100_000  # the broker's limit was raised: the row now fits
    await retry_dead_letter(uow, dead.outbox_id)
    await _relay_until_quiet(OutboxRelay(uow.sessions, broker), rounds=1)
    assert [json.loads(v)["data"]["pipeline_id"] for _t, _k, v in broker.sent] == [1, 2], "the key's order is kept"
    assert all(row.published_at for row in await outbox(uow))


class FakeDeadLetters:
    """Stands in for the producer's dead-letter path; records what would be sent."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, str]] = []

    async def dead_letter(self, topic, key, raw, reason):
        self.records.append((topic, raw, reason))


async def test_undecodable_and_poison_events_go_to_the_dead_letter_topic():
    dlq = FakeDeadLetters()

    async def never_called(envelope):
        raise AssertionError("a record that is not an envelope reaches no handler")

    await bus.handle_record("pipeline.succeeded", b"k", b"{oops", never_called, dlq)

    async def poison(envelope):
        raise PoisonEvent("unknown service s1")

    await bus.handle_record("pipeline.succeeded", b"k", _event(1).model_dump_json().encode(), poison, dlq)
    assert [reason.split(":")[0] for _t, _raw, reason in dlq.records] == ["undecodable", "poison"]


@pytest.fixture
def json_logs():
    """JSON logging as a service configures it, undone after the test."""
    yield lambda: configure_logging("testsvc")
    logging.getLogger().handlers.clear()


async def test_transient_failures_are_retried_and_logged_with_the_event_ids(monkeypatch, capsys, json_logs):
    monkeypatch.setattr(bus, "RETRY_DELAYS", (0.0, 0.0))
    monkeypatch.setattr(bus, "OUTAGE_MAX_DELAY", 0.0)
    json_logs()  # after capsys took stderr over
    dlq, calls = FakeDeadLetters(), []
    event = _event(2)

    async def flaky(envelope):
        calls.append(envelope.id)
        if len(calls) < 2:
            raise ConnectionError("database restarting")

    await bus.handle_record("pipeline.succeeded", b"k", event.model_dump_json().encode(), flaky, dlq)
    assert calls == [event.id, event.id] and dlq.records == []
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    retry = next(line for line in lines if line["event"] == "event handling failed, retrying")
    assert (retry["service"], retry["event_id"], retry["correlation_id"]) == ("testsvc", event.id, event.correlation_id)


async def test_a_handler_that_keeps_failing_is_dead_lettered(monkeypatch):
    monkeypatch.setattr(bus, "RETRY_DELAYS", (0.0,))
    dlq = FakeDeadLetters()

    async def broken(envelope):
        raise KeyError("bug")

    await bus.handle_record("version.created", None, _event(3).model_dump_json().encode(), broken, dlq)
    assert dlq.records[0][2].startswith("failed after retries")


async def test_times_come_back_from_sqlite_as_aware_utc(make_uow):
    uow = await make_uow("timetest", [])
    async with uow.begin() as session:
        add_event(session, Topic.PIPELINE_SUCCEEDED, _event(9), key="s1")
    [row] = await outbox(uow)
    assert row.created_at.tzinfo is not None and row.created_at.utcoffset().total_seconds() == 0


async def test_an_outage_is_waited_out_not_dead_lettered(monkeypatch):
    from sqlalchemy.exc import OperationalError

    monkeypatch.setattr(bus, "RETRY_DELAYS", (0.0,))
    monkeypatch.setattr(bus, "OUTAGE_MAX_DELAY", 0.0)
    dlq, calls = FakeDeadLetters(), []

    async def database_down_for_a_while(envelope):
        calls.append(1)
        if len(calls) < 8:  # far more attempts than a bad event gets
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("database restarting"))

    await bus.handle_record(
        "version.created", b"k", _event(4).model_dump_json().encode(), database_down_for_a_while, dlq
    )
    assert len(calls) == 8 and dlq.records == []


async def test_event_data_that_does_not_fit_its_model_is_poison():
    dlq = FakeDeadLetters()
    broken = _event(5).model_copy(update={"data": {"service_id": "s1"}})

    async def handler(envelope):
        envelope.payload(PipelineSucceeded)

    await bus.handle_record("pipeline.succeeded", b"k", broken.model_dump_json().encode(), handler, dlq)
    assert dlq.records[0][2].startswith("poison") and "unusable data" in dlq.records[0][2]


async def test_published_and_applied_rows_are_pruned_after_the_retention(make_uow):
    uow = await make_uow("prunetest", [])
    old, fresh, unpublished = _event(20), _event(21), _event(22)
    async with uow.begin() as session:
        for event in (old, fresh, unpublished):
            add_event(session, Topic.PIPELINE_SUCCEEDED, event, key="s1")
        for event in (old, fresh):
            assert await claim_inbox(session, event)

    async def broker(records):
        pass

    relay = OutboxRelay(uow.sessions, broker, retention=timedelta(days=7))
    async with uow.begin() as session:  # two were published, one long ago
        rows = {row.event_id: row for row in (await session.exec(select(OutboxMessage))).all()}
        rows[old.id].published_at = rows[old.id].created_at - timedelta(days=30)
        rows[fresh.id].published_at = rows[fresh.id].created_at
        inbox = await session.get(InboxEntry, old.id)
        inbox.applied_at -= timedelta(days=30)
    assert await relay.prune() == 2
    remaining = {row.event_id for row in await outbox(uow)}
    assert remaining == {fresh.id, unpublished.id}, "unpublished rows are never pruned"
    async with uow.sessions() as session:
        assert await session.get(InboxEntry, old.id) is None and await session.get(InboxEntry, fresh.id)


async def test_emit_takes_topic_key_subject_source_and_chain_from_the_data_and_its_cause(make_uow):
    uow = await make_uow("versioning", [])
    cause = new_event(
        Topic.PIPELINE_SUCCEEDED,
        PipelineSucceeded(service_id="s9", project="shop", service="web", pipeline_id=1, ref="main", sha="a"),
        source="gantry/versioning",
        subject="shop/web",
        correlation_id="hook-1",
    )
    data = VersionCreated(
        service_id="s9",
        project="shop",
        service="web",
        version="1.0",
        sha="a",
        ref="main",
        pipeline_id=1,
        image="reg/shop/web:1.0",
    )
    async with uow.begin() as session:
        caused = emit(session, data, cause=cause)
        route = emit(
            session,
            RouteChanged(name="orders", path="/orders/**", service="shop/orders", change="created"),
            correlation_id="request-7",
        )
    version_row, route_row = await outbox(uow)
    assert (version_row.topic, version_row.key) == ("version.created", "s9")
    assert (caused.source, caused.subject, caused.correlation_id, caused.causation_id) == (
        "gantry/versioning",
        "shop/web",
        "hook-1",
        cause.id,
    )
    assert (route_row.topic, route_row.key, route.subject, route.correlation_id) == (
        "gateway.route.changed",
        "orders",
        "orders",
        "request-7",
    )


def test_the_test_kafka_cluster_id_never_reads_as_an_option():
    # 1 id in 64 started with "-", and the storage tool took it for an option: Apache Kafka tests failed at random.
    from tests.harness.kafka_server import _cluster_id

    ids = [_cluster_id() for _ in range(2000)]
    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    assert all(len(cluster_id) == 22 for cluster_id in ids)


def test_pages_follow_one_another_without_repeating_or_skipping() -> None:
    from shared.paging import PageRequest, decode_cursor

    items = list(range(1, 8))
    seen: list[int] = []
    page = PageRequest(limit=3)
    while True:
        served, cursor = page.window(items, lambda i: (i,))
        seen += served
        if cursor is None:
            break
        page = PageRequest(limit=3, after=decode_cursor(cursor))
    assert seen == items


def test_a_cursor_gantry_did_not_give_is_a_bad_request() -> None:
    from shared.errors import BadRequest
    from shared.paging import decode_cursor

    with pytest.raises(BadRequest, match="not one Gantry gave"):
        decode_cursor("%%%not-base64")


def test_deploy_admins_read_every_project_but_write_none() -> None:
    deploy_admin = Principal(user="dora", roles=frozenset({"deploy-admin"}))
    member = Principal(user="mia", roles=frozenset({"shop:project-member"}))
    deploy_admin.require_project_read("shop")
    member.require_project_read("shop")
    with pytest.raises(Forbidden, match="needs a role in project 'bank'"):
        member.require_project_read("bank")
    with pytest.raises(Forbidden):
        deploy_admin.require_project("shop", "project-owner")


async def test_a_woken_relay_reads_the_outbox_once_when_it_was_not_full(make_uow):
    """After a short read the relay waits to be woken (each commit with outbox rows wakes it)
    instead of reading the outbox again to find it empty: one read per wake, not two."""
    uow = await make_uow("relaytest", [])
    sent: list[tuple[str, str, bytes]] = []

    async def broker(records):
        sent.extend(records)
        return [None for _ in records]

    relay = OutboxRelay(uow.sessions, broker, poll_interval=60, batch=2)
    uow.on_outbox_commit(relay.wake)
    with reads_of(uow, "outbox") as reads:
        relay.start()
        try:
            async with uow.begin() as session:
                add_event(session, Topic.PIPELINE_SUCCEEDED, _event(1), key="s1")
            await eventually(lambda: _sent_count(sent, 1), timeout=5)
            await asyncio.sleep(0.2)  # a second read would come at once, not at the 60 s poll
            assert len(reads) == 2, "the first read at start (empty), then one per wake"
            async with uow.begin() as session:  # three rows: a full read of two, then one of one
                for pipeline in (2, 3, 4):
                    add_event(session, Topic.PIPELINE_SUCCEEDED, _event(pipeline), key="s1")
            await eventually(lambda: _sent_count(sent, 4), timeout=5)
            await asyncio.sleep(0.2)
        finally:
            await relay.stop()
    assert len(reads) == 4, "a full read is followed at once by another; a short one is not"
    assert [json.loads(value)["data"]["pipeline_id"] for _, _, value in sent] == [1, 2, 3, 4]


async def _sent_count(sent: list[tuple[str, str, bytes]], count: int) -> bool:
    return len(sent) == count


class Stamped(SQLModel, table=True):
    __tablename__ = "quick_default_stamps"
    id: int | None = Field(default=None, primary_key=True)
    tags: list[str] = Field(default_factory=list, sa_type=JSON)
    extra: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    at: datetime = Field(default_factory=utcnow)


def test_signed_default_factories_give_each_row_its_own_defaults_without_inspecting_them(monkeypatch) -> None:
    quick_default_factories([Stamped])
    inspected: list[str] = []
    for worker in ("_signature_from_function", "_signature_fromstr"):  # the slow parts of a look-up
        work = getattr(inspect, worker)

        def counted(*args, _work=work, _name=worker, **kwargs):  # type: ignore[no-untyped-def]
            inspected.append(_name)
            return _work(*args, **kwargs)

        monkeypatch.setattr(inspect, worker, counted)
    first, second = Stamped(), Stamped()
    assert inspected == [], "no signature looked up at each row"
    first.tags.append("a")
    first.extra["k"] = "v"
    assert (second.tags, second.extra) == ([], {}), "each row has lists and dicts of its own"
    assert first.at.tzinfo is not None and second.at >= first.at
    quick_default_factories([Stamped])  # again, as a second service start in one process would
    assert Stamped().tags == []


def test_heartbeats_come_every_third_of_the_session_unless_told_otherwise(tmp_path):
    """Kafka's rule by default: a third of the session timeout, at most 3 s. The embedded broker
    never drops a silent member, so `gantry up` sends one every 3 s there (gantry/up.py)."""

    def settings(**fields: object) -> Settings:
        return Settings(home=tmp_path, kafka_bootstrap="127.0.0.1:9092", **fields)  # type: ignore[arg-type]

    assert bus.heartbeat_interval(settings(kafka_session_timeout_ms=1000)) == pytest.approx(1 / 3)
    assert bus.heartbeat_interval(settings(kafka_session_timeout_ms=30_000)) == 3.0
    told = settings(kafka_session_timeout_ms=1000, kafka_heartbeat_interval_ms=3000)
    assert bus.heartbeat_interval(told) == 3.0
    assert bus.make_faust_app("release", told).conf.broker_heartbeat_interval == 3.0
    with pytest.raises(ValidationError, match="kafka_heartbeat_interval_ms"):
        settings(kafka_heartbeat_interval_ms=50)


def test_gantry_up_sends_heartbeats_every_3_s_to_its_embedded_broker(monkeypatch, tmp_path):
    """Through the environment `gantry up` gives its services, as each service reads it."""
    from gantry.up import EMBEDDED_DEFAULTS

    for name, value in {**EMBEDDED_DEFAULTS, "GANTRY_KAFKA_BOOTSTRAP": "127.0.0.1:9092"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings(home=tmp_path)

    assert settings.kafka_session_timeout_ms == 1000
    assert bus.heartbeat_interval(settings) == 3.0
