"""The live event stream's fan-out: per-client bounded queues, lag notices, the recent buffer."""

from __future__ import annotations

import json

import pytest
from aiokafka import ConsumerRecord

from services.gateway.api import chosen_topics
from services.gateway.events_stream import ClientQueue, EventStream, StreamItem
from shared.errors import InvalidInput


def record(topic: str, offset: int, value: bytes, timestamp: int | None = None) -> ConsumerRecord:
    return ConsumerRecord(
        topic=topic,
        partition=1,
        offset=offset,
        timestamp=timestamp or 1_700_000_000_000 + offset,
        timestamp_type=0,
        key=b"svc-1",
        value=value,
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=len(value),
        headers=(),
    )


def item(topic: str, offset: int, timestamp: int | None = None) -> StreamItem:
    body = json.dumps({"id": f"e{offset}", "type": topic, "data": {"n": offset}}).encode()
    return StreamItem.from_record(record(topic, offset, body, timestamp))


async def frames_until_closed(client: ClientQueue) -> list[str]:
    return [frame async for frame in client.frames()]


def test_an_event_becomes_one_sse_message() -> None:
    assert item("deploy.status", 7).as_sse() == (
        'id: deploy.status:1:7\nevent: deploy.status\ndata: {"id":"e7","type":"deploy.status","data":{"n":7}}\n\n'
    )


def test_undecodable_records_are_shown_not_dropped() -> None:
    bad = StreamItem.from_record(record("deploy.status.dlq", 1, b"\xffnot json\nat all"))
    assert bad.event == {"undecodable": "\ufffdnot json\nat all"}
    assert bad.as_sse().count("\ndata: ") == 1  # JSON keeps the newline escaped
    assert bad.as_json()["key"] == "svc-1"


async def test_a_slow_client_loses_the_oldest_and_is_told() -> None:
    client = ClientQueue(frozenset(), size=3)
    for offset in range(5):
        client.offer(item("deploy.status", offset))
    client.close()
    frames = await frames_until_closed(client)
    assert frames[0].startswith("retry: 3000\n")
    assert frames[1] == 'event: lagged\ndata: {"dropped": 2}\n\n'
    assert [f.split("\n")[0] for f in frames[2:]] == [f"id: deploy.status:1:{n}" for n in (2, 3, 4)]


async def test_clients_get_only_live_events_of_their_topics() -> None:
    stream = EventStream("127.0.0.1:9", 10, recent=3)
    everything = stream.subscribe(frozenset())
    deploys = stream.subscribe(frozenset({"deploy.status"}))
    stream.accept(item("deploy.status", 0), live=False)  # read from the tail at start
    stream.accept(item("service.created", 1))
    stream.accept(item("deploy.status", 2))
    stream.close_clients()
    ids = [[f.split("\n")[0] for f in await frames_until_closed(c)][1:] for c in (everything, deploys)]
    assert ids == [
        ["id: service.created:1:1", "id: deploy.status:1:2"],
        ["id: deploy.status:1:2"],
    ]
    stream.unsubscribe(everything)
    stream.unsubscribe(deploys)
    assert stream.clients == 0


def test_the_recent_buffer_keeps_the_newest_in_time_order() -> None:
    stream = EventStream("127.0.0.1:9", 10, recent=3)
    for offset, timestamp in [(0, 50), (1, 10), (2, 40), (3, 30), (4, 20)]:
        stream.accept(item("deploy.status", offset, timestamp))
    assert [e["offset"] for e in stream.recent(frozenset(), 200)] == [3, 2, 0]
    assert [e["offset"] for e in stream.recent(frozenset(), 1)] == [0]
    assert stream.recent(frozenset({"service.created"}), 200) == []


def test_topic_filters() -> None:
    assert chosen_topics(None) == frozenset()
    assert chosen_topics(["deploy.status,version.created", "deploy.status.dlq"]) == {
        "deploy.status",
        "version.created",
        "deploy.status.dlq",
    }
    with pytest.raises(InvalidInput, match="unknown topic 'deploy'"):
        chosen_topics(["deploy"])
