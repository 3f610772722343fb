"""Consuming in batches: one transaction per batch, nothing applied twice, a poison event alone to
the dead-letter topic, each key's order kept; and the relay marking a published batch at once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import bindparam, event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import delete, select

from shared.batches import (
    CURRENT_BATCH,
    BatchConflict,
    FollowUp,
    batch_memo,
    first_row,
    get_row,
    holds_write_lock,
    indexed,
    note_absent,
)
from shared.bus import folded, read_ahead, reading_ahead, with_prefetch
from shared.consume import Record, apply_batch, apply_handed_on, handle_batch
from shared.errors import PoisonEvent
from shared.events import Envelope, PipelineSucceeded, Topic, VersionCreated, new_event, utcnow
from shared.outbox import (
    InboxEntry,
    OutboxDeadLetter,
    OutboxRelay,
    UnitOfWork,
    add_event,
    claim_inbox,
    emit,
    record_applied,
)
from tests.conftest import SECOND_CONNECTIONS
from tests.unit.conftest import outbox, reads_of
from tests.unit.test_shared import FakeDeadLetters


def _succeeded(service_id: str, pipeline_id: int) -> Envelope:
    data = PipelineSucceeded(service_id=service_id, project="p", service="s", pipeline_id=pipeline_id, ref="m", sha="a")
    return new_event(Topic.PIPELINE_SUCCEEDED, data, source="test", subject="p/s")


def _version_created(pipeline_id: int) -> Envelope:
    data = VersionCreated(
        service_id="s",
        project="p",
        service="s",
        version=f"v{pipeline_id}",
        sha="a",
        ref="m",
        pipeline_id=pipeline_id,
        image="registry/p/s:a",
    )
    return new_event(Topic.VERSION_CREATED, data, source="test", subject="p/s")


def _records(*envelopes: Envelope) -> list[Record]:
    return [
        Record(envelope.data["service_id"].encode(), envelope.model_dump_json().encode(), envelope)
        for envelope in envelopes
    ]


def _raw(*envelopes: Envelope) -> list[tuple[bytes | None, bytes | None]]:
    return [(record.key, record.raw) for record in _records(*envelopes)]


def make_version(uow: UnitOfWork):
    """A use case of the usual shape: claim the event, write its outgoing event, in one unit of work."""

    async def handler(envelope: Envelope) -> None:
        data = envelope.payload(PipelineSucceeded)
        async with uow.begin() as session:
            if not await claim_inbox(session, envelope):
                return
            version = VersionCreated(
                service_id=data.service_id,
                project="p",
                service="s",
                version=f"v{data.pipeline_id}",
                sha="a",
                ref="m",
                pipeline_id=data.pipeline_id,
                image="registry/p/s:a",
            )
            emit(session, version, cause=envelope)
            if data.pipeline_id == 13:  # written, then found poison: its own write must go too
                raise PoisonEvent("pipeline 13 is poison")

    return handler


@contextmanager
def counted(uow: UnitOfWork) -> Iterator[dict[str, int]]:
    """Count commits and statements on the unit of work's real SQLite engine."""
    engine = uow.sessions.kw["bind"]
    assert isinstance(engine, AsyncEngine)
    counts = {"commits": 0, "statements": 0}

    def on_commit(_conn) -> None:
        counts["commits"] += 1

    def on_statement(*_args) -> None:
        counts["statements"] += 1

    event.listen(engine.sync_engine, "commit", on_commit)
    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    try:
        yield counts
    finally:
        event.remove(engine.sync_engine, "commit", on_commit)
        event.remove(engine.sync_engine, "before_cursor_execute", on_statement)


async def _inbox(uow: UnitOfWork) -> set[str]:
    async with uow.sessions() as session:
        return set((await session.exec(select(InboxEntry.event_id))).all())


def _versions_made(rows) -> list[str]:
    return [json.loads(row.payload)["data"]["version"] for row in rows if row.topic == "version.created"]


async def test_a_batch_is_applied_in_one_transaction_with_one_inbox_read_and_one_insert(make_uow):
    uow = await make_uow("batchtest", [])
    envelopes = [_succeeded("s1", n) for n in range(100, 150)]
    with counted(uow) as counts:
        await handle_batch("pipeline.succeeded", _raw(*envelopes), make_version(uow), FakeDeadLetters(), uow)
    assert counts["commits"] == 1
    # BEGIN IMMEDIATE, the inbox read, the outbox insert, the inbox insert: no per-event inbox
    # look-up or outbox insert, no savepoint when nothing fails, no per-event commit
    assert counts["statements"] == 4, counts
    assert _versions_made(await outbox(uow)) == [f"v{n}" for n in range(100, 150)]
    assert await _inbox(uow) == {envelope.id for envelope in envelopes}


async def test_a_batchs_events_go_to_the_outbox_in_one_insert_in_the_order_they_were_emitted(make_uow):
    uow = await make_uow("batchtest", [])
    make = make_version(uow)

    async def read_then_make(envelope: Envelope) -> None:
        async with uow.begin() as session:  # a read before each emit: it flushed the last event alone
            await session.exec(select(InboxEntry.event_id).limit(1))
        await make(envelope)

    envelopes = [_succeeded(key, n) for n in range(100, 110) for key in ("a", "b")]
    with reads_of(uow, "inbox"), counted(uow) as counts:
        engine = uow.sessions.kw["bind"].sync_engine
        inserts: list[int] = []

        def on_insert(_conn, _cursor, statement, parameters, _context, many) -> None:  # type: ignore[no-untyped-def]
            if statement.startswith("INSERT INTO outbox"):
                inserts.append(len(parameters) if many else 1)

        event.listen(engine, "before_cursor_execute", on_insert)
        try:
            await apply_batch(uow, _records(*envelopes), read_then_make)
        finally:
            event.remove(engine, "before_cursor_execute", on_insert)
    assert inserts == [len(envelopes)] and counts["commits"] == 1
    rows = await outbox(uow)
    assert [(row.key, json.loads(row.payload)["data"]["version"]) for row in rows] == [
        (json.loads(envelope.model_dump_json())["data"]["service_id"], f"v{envelope.data['pipeline_id']}")
        for envelope in envelopes
    ]
    assert all(row.created_at is not None and row.published_at is None for row in rows)


async def test_a_careful_batch_gives_each_event_a_savepoint_and_still_commits_once(make_uow):
    uow = await make_uow("batchtest", [])
    envelopes = [_succeeded("s1", n) for n in range(100, 120)]
    with counted(uow) as counts:
        await apply_batch(uow, _records(*envelopes), make_version(uow), careful=True)
    assert counts["commits"] == 1 and counts["statements"] <= 2 + 3 * len(envelopes) + 1, counts
    assert _versions_made(await outbox(uow)) == [f"v{n}" for n in range(100, 120)]


async def test_a_redelivered_batch_applies_nothing_twice(make_uow):
    uow = await make_uow("batchtest", [])
    first = [_succeeded("s1", n) for n in range(5)]
    await apply_batch(uow, _records(*first), make_version(uow))
    later = _succeeded("s1", 5)
    # the same batch again (a crash before the offsets were committed), overlapping a new event,
    # and one event twice within the batch (a relay that published it again)
    await apply_batch(uow, _records(*first[2:], later, later), make_version(uow))
    assert _versions_made(await outbox(uow)) == [f"v{n}" for n in range(6)]


async def test_a_poison_event_in_the_middle_goes_alone_to_the_dead_letter_topic(make_uow):
    uow = await make_uow("batchtest", [])
    envelopes = [_succeeded("s1", n) for n in (11, 12, 13, 14, 15)]
    dlq = FakeDeadLetters()
    raw = [(record.key, record.raw) for record in _records(*envelopes)]
    await handle_batch("pipeline.succeeded", [*raw[:2], (b"s1", b"{oops"), *raw[2:]], make_version(uow), dlq, uow)
    assert _versions_made(await outbox(uow)) == ["v11", "v12", "v14", "v15"]
    assert await _inbox(uow) == {envelopes[n].id for n in (0, 1, 3, 4)}, "the poison event is not marked applied"
    assert [(topic, reason.split(":")[0]) for topic, _raw, reason in dlq.records] == [
        ("pipeline.succeeded", "undecodable"),
        ("pipeline.succeeded", "poison"),
    ]


async def test_each_keys_order_is_kept_across_keys_in_one_batch(make_uow):
    uow = await make_uow("batchtest", [])
    mixed = [_succeeded(key, n) for n in range(10) for key in ("a", "b", "c")]
    await apply_batch(uow, _records(*mixed), make_version(uow))
    rows = await outbox(uow)
    for key in ("a", "b", "c"):
        assert _versions_made(row for row in rows if row.key == key) == [f"v{n}" for n in range(10)]


async def test_a_unit_of_work_outside_a_batch_commits_on_its_own(make_uow):
    uow = await make_uow("batchtest", [])
    with counted(uow) as counts:
        await make_version(uow)(_succeeded("s1", 1))
        await make_version(uow)(_succeeded("s1", 2))
    assert counts["commits"] == 2 and _versions_made(await outbox(uow)) == ["v1", "v2"]


async def test_the_relay_sends_a_batch_and_marks_it_in_one_statement(make_uow):
    uow = await make_uow("batchtest", [])
    async with uow.begin() as session:
        for n in range(30):
            add_event(session, Topic.PIPELINE_SUCCEEDED, _succeeded("s1", n), key="s1")
    calls: list[int] = []

    async def broker(records):
        calls.append(len(records))
        return [None] * len(records)

    engine = uow.sessions.kw["bind"]
    updates: list[str] = []

    def on_statement(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            updates.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    try:
        assert await OutboxRelay(uow.sessions, broker).relay_once() == 30
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_statement)
    assert calls == [30] and len(updates) == 1
    assert all(row.published_at is not None for row in await outbox(uow))


@pytest.mark.second_connection  # on purpose: see tests/conftest.py
async def test_an_outage_rolls_the_whole_batch_back_and_it_is_tried_again(make_uow, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from shared import consume

    monkeypatch.setattr(consume, "OUTAGE_MAX_DELAY", 0.0)
    uow = await make_uow("batchtest", [])
    envelopes = [_succeeded("s1", n) for n in (1, 2, 3)]
    apply, calls = make_version(uow), []

    committed_meanwhile: list[int] = []

    async def database_away_once(envelope: Envelope) -> None:
        committed_meanwhile.append(len(await outbox(uow)))  # what another connection sees now
        await apply(envelope)
        calls.append(envelope.data["pipeline_id"])
        if calls == [1, 2]:  # the first two written, then the database goes away
            raise OperationalError("COMMIT", {}, ConnectionRefusedError("database restarting"))

    raw = [(record.key, record.raw) for record in _records(*envelopes)]
    await handle_batch("pipeline.succeeded", raw, database_away_once, FakeDeadLetters(), uow)
    assert calls == [1, 2, 1, 2, 3], "the batch was tried again from its start"
    assert committed_meanwhile == [0] * 5, "no event's savepoint committed before its batch"
    assert _versions_made(await outbox(uow)) == ["v1", "v2", "v3"], "nothing of the first try stayed"


async def test_inbox_ids_another_consumer_applied_meanwhile_make_the_batch_a_conflict(make_uow):
    """On SQLite the inbox ids go with the COMMIT: a clash found there is still the batch's conflict
    (tried again after a pause, the inbox read afresh), not a use case's failure."""
    uow = await make_uow("batchtest", [])
    envelopes = [_succeeded("s1", n) for n in (1, 2)]
    make = make_version(uow)

    async def applied_elsewhere_meanwhile(envelope: Envelope) -> None:
        await make(envelope)
        async with uow.begin() as session:  # as another instance's commit would have
            record_applied(session, envelope)

    with pytest.raises(BatchConflict):
        await apply_batch(uow, _records(envelopes[0]), applied_elsewhere_meanwhile, careful=False)
    assert await outbox(uow) == [] and await _inbox(uow) == set(), "nothing of the batch stayed"
    await apply_batch(uow, _records(*envelopes), make, careful=False)
    assert _versions_made(await outbox(uow)) == ["v1", "v2"]


async def test_only_a_batchs_own_session_on_sqlite_holds_the_write_lock(make_uow):
    uow = await make_uow("versioning", [])
    async with uow.begin() as session:
        assert not holds_write_lock(session), "a unit of work of its own took no lock as it began"
    async with uow.batch(["e1"]) as batch:
        assert holds_write_lock(batch.session), "BEGIN IMMEDIATE: the batch writes alone"
        async with uow.sessions() as other:
            assert not holds_write_lock(other)


def make_lookup(uow: UnitOfWork, found: list[str]):
    """A use case that looks a row up by primary key (a dead-lettered outbox row, by pipeline id)."""

    async def handler(envelope: Envelope) -> None:
        data = envelope.payload(PipelineSucceeded)
        async with uow.begin() as session:
            if not await claim_inbox(session, envelope):
                return
            row = await session.get(OutboxDeadLetter, data.pipeline_id)
            found.append(row.reason if row is not None else "none")

    return handler


# the dead-lettered rows the batch's pipelines name, in one statement
DEAD_LETTERS_AHEAD = read_ahead(OutboxDeadLetter, PipelineSucceeded, outbox_id="pipeline_id")


async def _dead_lettered(uow: UnitOfWork, *ids: int) -> None:
    async with uow.sessions() as session:
        for outbox_id in ids:
            await _add_dead_letter(session, outbox_id)
        await session.commit()


async def _add_dead_letter(session, outbox_id: int) -> None:
    session.add(
        OutboxDeadLetter(
            outbox_id=outbox_id,
            event_id=f"e{outbox_id}",
            topic="t",
            key="k",
            payload="{}",
            created_at=utcnow(),
            attempts=3,
            reason=f"reason {outbox_id}",
        )
    )


async def test_a_batch_reads_ahead_the_rows_its_use_cases_look_up_by_key(make_uow):
    uow = await make_uow("batchtest", [])
    await _dead_lettered(uow, *range(100, 120))
    envelopes = [_succeeded("s1", n) for n in range(100, 125)]  # the last five have no row
    found: list[str] = []
    with reads_of(uow, "outbox_dead_letters") as reads:
        await handle_batch(
            "t", _raw(*envelopes), with_prefetch(DEAD_LETTERS_AHEAD, make_lookup(uow, found)), FakeDeadLetters(), uow
        )
    assert found == [f"reason {n}" for n in range(100, 120)] + ["none"] * 5
    assert len(reads) == 1 + 5, "one read for the batch; a row that was not there is looked for as before"

    found.clear()
    with reads_of(uow, "outbox_dead_letters") as reads:  # the same use case, nothing read ahead
        await handle_batch(
            "t", _raw(*[_succeeded("s2", n) for n in range(100, 110)]), make_lookup(uow, found), FakeDeadLetters(), uow
        )
    assert found == [f"reason {n}" for n in range(100, 110)] and len(reads) == 10


async def test_a_failed_read_ahead_leaves_each_use_case_to_read_its_own_rows(make_uow):
    uow = await make_uow("batchtest", [])
    await _dead_lettered(uow, 7, 8)

    async def broken(_session, _envelopes):
        raise RuntimeError("a bug in reading ahead")

    poison = _succeeded("s1", 9).model_copy(update={"data": {"service_id": "s1"}})
    found: list[str] = []
    dlq = FakeDeadLetters()
    await handle_batch(
        "t",
        _raw(_succeeded("s1", 7), poison, _succeeded("s1", 8)),
        with_prefetch(broken, make_lookup(uow, found)),
        dlq,
        uow,
    )
    assert found == ["reason 7", "reason 8"]
    assert [reason.split(":")[0] for _topic, _raw, reason in dlq.records] == ["poison"]
    # a poison event's data is skipped when reading ahead: the use case refuses it, in the batch
    found.clear()
    await handle_batch(
        "t",
        _raw(poison.model_copy(update={"id": "p2"}), _succeeded("s2", 7)),
        with_prefetch(DEAD_LETTERS_AHEAD, make_lookup(uow, found)),
        dlq,
        uow,
    )
    assert found == ["reason 7"] and len(dlq.records) == 2


async def test_a_read_ahead_by_key_reads_only_the_rows_its_session_does_not_hold_as_read(make_uow):
    uow = await make_uow("batchtest", [])
    await _dead_lettered(uow, 1, 2)
    async with uow.sessions() as session:
        with reads_of(uow, "outbox_dead_letters") as reads:
            [first] = await DEAD_LETTERS_AHEAD(session, [_succeeded("s1", 1)])
            both = await DEAD_LETTERS_AHEAD(session, [_succeeded("s1", 1), _succeeded("s1", 2)])
            session.expire(first)  # as a rolled-back savepoint leaves what it changed
            again = await DEAD_LETTERS_AHEAD(session, [_succeeded("s1", 1)])
            await session.delete(first)
            gone = await DEAD_LETTERS_AHEAD(session, [_succeeded("s1", 1)])
    assert sorted(row.outbox_id for row in both) == [1, 2] and again == [first] and gone == []
    assert [parameters for _statement, parameters in reads] == [(1,), (2,), (1,), (1,)], (
        "row 1 held: only row 2 read; expired, or being deleted: read again"
    )


async def test_reads_ahead_in_turn_keep_their_rows_together(make_uow):
    uow = await make_uow("batchtest", [])
    await _dead_lettered(uow, 1, 2)
    envelopes = [_succeeded("s1", 1), _succeeded("s1", 2)]
    async with uow.sessions() as session:
        with reads_of(uow, "outbox_dead_letters") as reads:
            rows = await reading_ahead(DEAD_LETTERS_AHEAD, DEAD_LETTERS_AHEAD)(session, envelopes)
    assert sorted(row.outbox_id for row in rows) == [1, 1, 2, 2]
    assert len(reads) == 1, "the second finds the rows the first read in the session, without a statement"
    assert await DEAD_LETTERS_AHEAD(session, [_succeeded("s1", 5).model_copy(update={"data": {}})]) == [], (
        "no statement for a batch with no usable data"
    )


async def test_a_row_read_ahead_and_not_found_is_found_once_a_use_case_added_it(make_uow):
    uow = await make_uow("batchtest", [])
    found: list[str] = []

    async def add_or_find(envelope: Envelope) -> None:
        data = envelope.payload(PipelineSucceeded)
        async with uow.begin() as session:
            if not await claim_inbox(session, envelope):
                return
            row = await get_row(session, OutboxDeadLetter, 7)
            found.append(row.reason if row is not None else "none")
            if row is None and data.pipeline_id == 1:
                await _add_dead_letter(session, 7)
                if data.service_id == "flushed":
                    await session.flush()

    async def none_ahead(session, envelopes):
        note_absent(session, OutboxDeadLetter, [7])
        return []

    for how in ("pending", "flushed"):
        found.clear()
        async with uow.sessions() as session:
            await session.exec(delete(OutboxDeadLetter))
            await session.commit()
        envelopes = [_succeeded(how, 0), _succeeded(how, 1), _succeeded(how, 2)]
        with reads_of(uow, "outbox_dead_letters") as reads:
            await handle_batch("t", _raw(*envelopes), with_prefetch(none_ahead, add_or_find), FakeDeadLetters(), uow)
        assert found == ["none", "none", "reason 7"], how
        # the absence noted ahead answers the first two; the row added since is found in the
        # session while pending, and looked for again once flushed (the session may have let it go)
        assert len(reads) == (0 if how == "pending" else 1), how


async def test_a_read_ahead_by_primary_key_notes_what_it_did_not_find(make_uow):
    uow = await make_uow("batchtest", [])
    await _dead_lettered(uow, 100)
    found: list[str] = []

    async def look_up(envelope: Envelope) -> None:
        async with uow.begin() as session:
            if await claim_inbox(session, envelope):
                row = await get_row(session, OutboxDeadLetter, envelope.payload(PipelineSucceeded).pipeline_id)
                found.append(row.reason if row is not None else "none")

    envelopes = [_succeeded("s1", n) for n in (100, 101, 102)]
    with reads_of(uow, "outbox_dead_letters") as reads:
        await handle_batch("t", _raw(*envelopes), with_prefetch(DEAD_LETTERS_AHEAD, look_up), FakeDeadLetters(), uow)
    assert found == ["reason 100", "none", "none"]
    assert len(reads) == 1, "the rows not found are known absent: no look-up of their own"


# the dead-lettered rows whose key is one of the batch's pipelines' commits: not the primary key
BY_KEY_AHEAD = read_ahead(OutboxDeadLetter, PipelineSucceeded, key="sha")


def _of_commit(sha: str, pipeline_id: int = 0, service_id: str = "s1") -> Envelope:
    data = PipelineSucceeded(service_id=service_id, project="p", service="s", pipeline_id=pipeline_id, ref="m", sha=sha)
    return new_event(Topic.PIPELINE_SUCCEEDED, data, source="test", subject="p/s")


def _dead_letter_row(outbox_id: int, key: str) -> OutboxDeadLetter:
    return OutboxDeadLetter(
        outbox_id=outbox_id,
        event_id=f"e{outbox_id}",
        topic="t",
        key=key,
        payload="{}",
        created_at=utcnow(),
        attempts=3,
        reason="r",
    )


async def test_a_batch_finds_rows_by_other_columns_among_those_read_ahead_and_those_it_added(make_uow):
    uow = await make_uow("batchtest", [])
    await _dead_lettered(uow, 1, 2)  # both of key "k"
    found: list[list[int] | None] = []
    for how in ("pending", "flushed"):
        found.clear()

        async def look_up_or_add(envelope: Envelope, how: str = how) -> None:
            data = envelope.payload(PipelineSucceeded)
            async with uow.begin() as session:
                if not await claim_inbox(session, envelope):
                    return
                rows = indexed(session, OutboxDeadLetter, key=data.sha)
                found.append(None if rows is None else sorted(row.outbox_id for row in rows))
                if data.pipeline_id and not rows:
                    session.add(_dead_letter_row(data.pipeline_id, data.sha))
                    if how == "flushed":
                        await session.flush()

        new = f"new-{how}"
        envelopes = [
            _of_commit("k"),
            _of_commit(new, (10 if how == "pending" else 11)),
            _of_commit(new),
            _of_commit("none"),
        ]
        with reads_of(uow, "outbox_dead_letters") as reads:
            await handle_batch(
                "t", _raw(*envelopes), with_prefetch(BY_KEY_AHEAD, look_up_or_add), FakeDeadLetters(), uow
            )
        assert found == [[1, 2], [], [(10 if how == "pending" else 11)], []], how
        assert len(reads) == 1, "the read ahead alone: the look-ups made no statement (and no flush)"


async def test_a_look_up_the_index_is_not_sure_of_goes_to_the_database(make_uow):
    uow = await make_uow("batchtest", [])
    await _dead_lettered(uow, 1, 2)  # both of key "k"
    of_key = select(OutboxDeadLetter).where(OutboxDeadLetter.key == bindparam("key"))
    newest_first = of_key.order_by(OutboxDeadLetter.outbox_id.desc())
    seen: list[object] = []

    async def use_case(envelope: Envelope) -> None:
        data = envelope.payload(PipelineSucceeded)
        async with uow.begin() as session:
            if not await claim_inbox(session, envelope):
                return
            if data.pipeline_id == 1:  # the query's order decides, not the index's
                row = await first_row(session, OutboxDeadLetter, newest_first, key="k")
                seen.append(row.outbox_id if row is not None else None)
            elif data.pipeline_id == 2:
                seen.append(indexed(session, OutboxDeadLetter, key="elsewhere"))
            elif data.pipeline_id == 3:
                row = await session.get(OutboxDeadLetter, 1)
                await session.delete(row)
                seen.append(sorted(r.outbox_id for r in indexed(session, OutboxDeadLetter, key="k") or []))
                await session.flush()
                seen.append(indexed(session, OutboxDeadLetter, key="k"))  # a row deleted: not sure
            elif data.pipeline_id == 4:
                session.add(_dead_letter_row(20, "poison"))
                await session.flush()
                raise PoisonEvent("written, then refused: its row is rolled back")
            elif data.pipeline_id == 5:
                seen.append(indexed(session, OutboxDeadLetter, key="poison"))  # rolled back: not sure
                row = await first_row(session, OutboxDeadLetter, of_key, key="poison")
                seen.append(row)

    cases = ("k", "k", "k", "poison", "poison")  # several rows, a key not named, a delete, a rollback
    envelopes = [_of_commit(sha, pipeline_id) for pipeline_id, sha in enumerate(cases, start=1)]
    dlq = FakeDeadLetters()
    await handle_batch("t", _raw(*envelopes), with_prefetch(BY_KEY_AHEAD, use_case), dlq, uow)
    # the poison event spoiled the first try: the batch was applied again, each event in a savepoint
    assert seen[-6:] == [2, None, [2], None, None, None]
    assert [reason.split(":")[0] for _topic, _raw, reason in dlq.records] == ["poison"]


async def test_a_batchs_memo_is_shared_by_its_use_cases_and_forgotten_when_one_fails(make_uow):
    uow = await make_uow("batchtest", [])
    seen: list[object] = []

    async def use_case(envelope: Envelope) -> None:
        data = envelope.payload(PipelineSucceeded)
        async with uow.begin() as session:
            if not await claim_inbox(session, envelope):
                return
            memo = batch_memo(session)
            assert memo is not None
            seen.append(dict(memo))
            memo[data.pipeline_id] = data.sha
            if data.sha == "poison":
                raise PoisonEvent("refused after it kept something")

    envelopes = [_of_commit("a", 1), _of_commit("b", 2), _of_commit("poison", 3), _of_commit("c", 4)]
    await handle_batch("t", _raw(*envelopes), use_case, FakeDeadLetters(), uow)
    # the careful try (after the poison spoiled the first): what the failed use case kept is gone
    assert seen[-4:] == [{}, {1: "a"}, {1: "a", 2: "b"}, {}]
    async with uow.sessions() as session:
        assert batch_memo(session) is None, "outside a batch, nothing is kept"


async def test_a_long_batch_lets_the_rest_of_the_service_have_the_event_loop(make_uow):
    uow = await make_uow("batchtest", [])
    finished: list[str] = []
    began = asyncio.Event()

    async def busy(envelope: Envelope) -> None:  # finds everything read ahead: never awaits
        until = time.monotonic() + 0.002
        while time.monotonic() < until:
            pass
        finished.append(envelope.id)
        began.set()

    async def door() -> int:  # a request arriving once the batch's use cases began
        await began.wait()
        return len(finished)

    envelopes = [_of_commit("a", n) for n in range(40)]  # about 80 ms of work in one batch
    answered, _ = await asyncio.gather(door(), handle_batch("t", _raw(*envelopes), busy, FakeDeadLetters(), uow))
    assert len(finished) == 40
    assert answered < 10, f"the request waited for {answered} of the batch's 40 events (about 2 ms each)"


async def test_batches_and_the_relay_take_turns_to_write_and_never_meet_sqlites_busy_lock(make_uow):
    """With SQLite's busy wait off, a second writer that asked SQLite for the lock while a batch held
    it would fail at once ("database is locked"): here each waits for its turn in the process
    instead, and goes as soon as the one before it committed, in the order they came."""
    uow = await make_uow("batchtest", [])
    engine = uow.sessions.kw["bind"].sync_engine

    def no_busy_wait(dbapi_connection, _record, _proxy) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 0")
        cursor.close()

    event.listen(engine, "checkout", no_busy_wait)
    async with uow.begin() as session:
        add_event(session, Topic.PIPELINE_SUCCEEDED, _succeeded("s1", 1), key="s1")
    sent: list[int] = []

    async def broker(records):
        sent.append(len(records))
        return [None] * len(records)

    order: list[str] = []
    first_in, let_go = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with uow.batch(["a"]) as batch:
            assert batch.claim("a", "t")
            first_in.set()
            await let_go.wait()
        order.append("first")

    async def second() -> None:
        async with uow.batch(["b"]) as batch:
            assert batch.claim("b", "t")
        order.append("second")

    async def relay() -> None:
        assert await OutboxRelay(uow.sessions, broker).relay_once() == 1
        order.append("relay")

    try:
        holder = asyncio.create_task(first())
        await first_in.wait()
        waiting = [asyncio.create_task(second()), asyncio.create_task(relay())]
        await asyncio.sleep(0.2)
        assert sent == [1], "the relay published while the batch wrote; only marking the row waits"
        assert order == [] and not any(task.done() for task in waiting), "both wait for the batch's commit"
        let_go.set()
        await asyncio.gather(holder, *waiting)
    finally:
        event.remove(engine, "checkout", no_busy_wait)
    assert order == ["first", "second", "relay"]
    async with uow.sessions() as session:
        assert set((await session.exec(select(InboxEntry.event_id))).all()) == {"a", "b"}
    assert all(row.published_at is not None for row in await outbox(uow))


@pytest.mark.second_connection  # on purpose: see tests/conftest.py
async def test_use_cases_waiting_to_write_hold_no_connection_so_the_writer_before_them_gets_a_second_one(make_uow):
    """Ten services prepared side by side once stalled deploy for 30 s: REST use cases waiting for
    SQLite's write lock slept in its busy handler, each holding a pooled connection, until the pool
    had none left for the batch that held the lock and opened a second session; SQLite's 30 s busy
    timeout then failed them all. Now they wait for their turn in the process, holding nothing."""
    uow = await make_uow("batchtest", [])
    pool = uow.sessions.kw["bind"].sync_engine.pool
    writers = pool.size() + pool._max_overflow + 5  # more than the pool ever lends at once

    async def write(n: int) -> None:
        async with uow.begin() as session:
            session.add(InboxEntry(event_id=f"rest-{n}", topic="t"))

    async with asyncio.timeout(20):  # a deadlock detector: they waited 30 s for each other
        async with uow.batch(["a"]) as batch:
            assert batch.claim("a", "t")
            waiting = [asyncio.create_task(write(n)) for n in range(writers)]
            await asyncio.sleep(0.3)  # long enough for each to reach its wait
            assert pool.checkedout() == 1, "only the batch holds a connection; the writers wait for their turn"
            async with uow.sessions() as second:  # e.g. a lookup that opens its own session
                assert await _inbox_count(second) == 0
        await asyncio.gather(*waiting)
    assert len(await _inbox(uow)) == writers + 1, "every writer wrote once the batch committed"


async def _inbox_count(session) -> int:
    """How many ids the inbox holds as ``session`` sees it (``_inbox`` reads in a session of its own)."""
    return len((await session.exec(select(InboxEntry.event_id))).all())


@pytest.mark.second_connection  # on purpose: see tests/conftest.py
async def test_a_use_case_inside_another_writers_turn_goes_on_in_it_and_another_task_waits(make_uow):
    """The turn is the task's: a use case that runs inside another's transaction, or inside a
    batch, on the same database (another unit of work on it) does not wait for itself; a task it
    starts waits like any other writer, until the transaction that holds the turn ends."""
    uow = await make_uow("batchtest", [])
    other = UnitOfWork(uow.sessions, source="gantry/other")  # same database, not the batch's owner
    order: list[str] = []

    async def later() -> None:
        async with uow.begin() as session:
            session.add(InboxEntry(event_id="later", topic="t"))
        order.append("later")

    async with asyncio.timeout(20):  # a deadlock detector
        async with uow.begin() as outer:
            outer.add(InboxEntry(event_id="outer", topic="t"))
            async with other.begin() as inner:
                assert await _inbox_count(inner) == 0, "its own session: the outer's write is not committed"
            started = asyncio.create_task(later())
            await asyncio.sleep(0.2)
            order.append("outer")
        await started
        async with uow.batch(["b"]) as batch:
            assert batch.claim("b", "t")
            async with other.begin() as inner:  # not a savepoint of the batch: a transaction of its own
                assert await _inbox_count(inner) == 2
    assert order == ["outer", "later"]


@pytest.mark.second_connection
async def test_a_task_that_takes_a_second_connection_while_it_holds_one_is_found(make_uow):
    """The guard every test runs under (``tests/conftest.py``): a session opened inside another's
    transaction in the same task is found, with where the task was; one after the other is not."""
    uow = await make_uow("batchtest", [])
    async with uow.sessions() as first:
        await _inbox_count(first)
    async with uow.sessions() as second:
        await _inbox_count(second)
    assert SECOND_CONNECTIONS.found == []
    async with uow.begin() as outer:
        await _inbox_count(outer)
        async with uow.sessions() as inner:
            await _inbox_count(inner)
    [found] = SECOND_CONNECTIONS.found
    assert "test_a_task_that_takes_a_second_connection_while_it_holds_one_is_found" in found


async def test_a_folded_event_is_applied_in_its_batch_unless_the_use_case_that_emitted_it_failed(make_uow):
    """``bus.folded``: what a batch emits on a topic its service folds is applied in that batch,
    in a use case of its own, after the batch's own events; what a failed use case emitted goes
    with the rest of its writes."""
    uow = await make_uow("versioning", [])
    seen: list[int] = []

    async def on_version_created(envelope: Envelope) -> None:
        async with uow.begin() as session:
            if await claim_inbox(session, envelope):
                seen.append(envelope.payload(VersionCreated).pipeline_id)

    uow.fold(Topic.VERSION_CREATED, folded(on_version_created))
    dead = FakeDeadLetters()
    await handle_batch(
        "pipeline.succeeded",
        _raw(_succeeded("s", 7), _succeeded("s", 13), _succeeded("s", 8)),
        make_version(uow),
        dead,
        uow,
    )

    assert seen == [7, 8], "13's use case failed: the event it emitted went with it"
    assert [reason.split(":")[0] for _topic, _raw_value, reason in dead.records] == ["poison"]
    emitted = [json.loads(row.payload)["id"] for row in await outbox(uow, "version.created")]
    assert len(emitted) == 2, "still published, for every other reader"
    assert all(event_id in uow.applied_here for event_id in emitted)
    async with uow.sessions() as session:
        applied = set((await session.exec(select(InboxEntry.event_id))).all())
    assert set(emitted) <= applied


async def test_what_a_batch_emits_on_a_topic_handed_on_reaches_the_service_once_committed(make_uow):
    """``UnitOfWork.hand_on``: the events a batch emitted on the topic are handed over after its
    commit, in order, without what a failed use case emitted; ``apply_handed_on`` applies them
    once, their copies from the topic are skipped, and one it fails is left to its copy."""
    uow = await make_uow("versioning", [])
    received: list[tuple[list[int], bool]] = []  # the pipelines each hand-over carried; inside a batch?

    def receive(handed: list[FollowUp]) -> None:
        received.append(
            ([done.envelope.payload(VersionCreated).pipeline_id for done in handed], bool(CURRENT_BATCH.get()))
        )
        kept.extend(handed)

    kept: list[FollowUp] = []
    uow.hand_on(Topic.VERSION_CREATED, receive)
    await handle_batch(
        "pipeline.succeeded",
        _raw(_succeeded("s", 7), _succeeded("s", 13), _succeeded("s", 8)),
        make_version(uow),
        FakeDeadLetters(),
        uow,
    )
    assert received == [([7, 8], False)], "once, after the batch, without 13's (its use case failed)"
    committed = [json.loads(row.payload)["id"] for row in await outbox(uow, "version.created")]
    assert [done.envelope.id for done in kept] == committed

    tries: list[int] = []

    async def on_version_created(envelope: Envelope) -> None:
        pipeline_id = envelope.payload(VersionCreated).pipeline_id
        async with uow.begin() as session:
            if await claim_inbox(session, envelope):
                tries.append(pipeline_id)
                if pipeline_id == 9 and tries.count(9) == 1:
                    raise RuntimeError("the first try of 9 fails")

    assert [e.id for e in await apply_handed_on(kept, on_version_created, uow)] == committed
    assert all(event_id in uow.applied_here for event_id in committed) and committed[0] in await _inbox(uow)
    dead = FakeDeadLetters()
    await handle_batch("version.created", _raw(*(done.envelope for done in kept)), on_version_created, dead, uow)
    assert tries == [7, 8], "the copies from the topic skipped"

    nine = FollowUp("version.created", _version_created(9), None)
    assert await apply_handed_on([nine], on_version_created, uow) == []
    assert nine.envelope.id not in uow.applied_here and nine.envelope.id not in await _inbox(uow)
    await handle_batch("version.created", _raw(nine.envelope), on_version_created, dead, uow)
    assert tries == [7, 8, 9, 9] and dead.records == [], "its copy from the topic applied it"


async def test_what_a_use_case_outside_a_batch_emits_on_a_topic_handed_on_follows_its_commit(make_uow):
    """A REST request's transaction hands on what it emitted too, once committed; a rolled-back one nothing."""
    uow = await make_uow("versioning", [])
    handed: list[FollowUp] = []
    uow.hand_on(Topic.VERSION_CREATED, handed.extend)

    async with uow.begin() as session:
        emit(session, _version_created(1).payload(VersionCreated))
        assert handed == [], "not before the commit"
    with pytest.raises(RuntimeError):
        await _emit_and_fail(uow, _version_created(2))

    assert [done.envelope.payload(VersionCreated).pipeline_id for done in handed] == [1]
    assert [json.loads(row.payload)["id"] for row in await outbox(uow, "version.created")] == [handed[0].envelope.id]


async def test_a_commit_that_hands_events_on_leaves_waking_the_relay_to_their_receiver(make_uow):
    """What the receiver's work emits then goes out in the same relay cycle as what was handed on;
    a commit that hands nothing on wakes the relay at once, as ever."""
    uow = await make_uow("versioning", [])
    wakes: list[int] = []
    handed: list[FollowUp] = []
    uow.on_outbox_commit(lambda: wakes.append(len(handed)))
    uow.hand_on(Topic.VERSION_CREATED, handed.extend)

    await handle_batch("pipeline.succeeded", _raw(_succeeded("s", 7)), make_version(uow), FakeDeadLetters(), uow)
    async with uow.begin() as session:
        emit(session, _version_created(1).payload(VersionCreated))
    assert len(handed) == 2 and wakes == [], "the receiver wakes it, once it dealt with them"
    uow.wake_relay_if_owed()
    assert wakes == [2]
    uow.wake_relay_if_owed()
    assert wakes == [2], "owed once"

    async with uow.begin() as session:  # nothing on the topic handed on
        add_event(session, Topic.PIPELINE_SUCCEEDED, _succeeded("s", 8), key="s")
    assert wakes == [2, 2], "woken at once"

    async with uow.begin() as session:  # handed on, then what its receiver applied committed and woke it
        emit(session, _version_created(2).payload(VersionCreated))
    async with uow.begin() as session:
        add_event(session, Topic.PIPELINE_SUCCEEDED, _succeeded("s", 9), key="s")
    uow.wake_relay_if_owed()
    assert wakes == [2, 2, 3], "one wake: the relay's next cycle publishes both"


async def _emit_and_fail(uow: UnitOfWork, envelope: Envelope) -> None:
    async with uow.begin() as session:
        emit(session, envelope.payload(VersionCreated))
        raise RuntimeError("refused after emitting")
