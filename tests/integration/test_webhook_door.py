"""GitLab's webhook door on real brokers and databases: cheap checks first, hooks queued on the bus,
nothing stuck behind one oversized hook, and an outbox row that can never be sent set aside.

The guide: "each pushed change produces a new version, but only when every stage of the service's CI
pipeline succeeded" — whatever else a hook carries, and whatever another service's hooks did."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import select

from gantry.embedded_broker import EmbeddedBroker
from services.catalog.app import create_app as create_catalog
from services.gateway.app import create_app as create_gateway
from services.versioning.app import create_app as create_versioning
from shared.auth import webhook_secret
from shared.events import PipelineSucceeded, Topic, new_event
from shared.gitlab_hook import MAX_TEXT
from shared.outbox import OutboxMessage, add_event
from shared.settings import Settings
from tests.support import ADMIN, SECRET, TopicReader, eventually, running, serving, token

pytestmark = pytest.mark.integration


def pipeline_hook(service: dict[str, Any], pipeline_id: int, status: str = "success", message: str = "Fix") -> dict:
    return {
        "object_kind": "pipeline",
        "object_attributes": {
            "id": pipeline_id,
            "ref": "main",
            "tag": False,
            "sha": f"{pipeline_id:040x}",
            "status": status,
            "stages": ["build", "test"],
        },
        "project": {"id": service["scm_project_id"], "path_with_namespace": service["repository_path"]},
        "commit": {"message": message, "author": {"name": "Ada"}},
    }


def hook_headers(service: dict[str, Any], delivery: str) -> dict[str, str]:
    return {
        "X-Gitlab-Event": "Pipeline Hook",
        "Idempotency-Key": delivery,
        "X-Gitlab-Token": webhook_secret(SECRET, service["scm_project_id"]),
    }


async def make_services(catalog, *codes: str) -> list[dict[str, Any]]:
    """Services whose codes no other test uses: a new versioning learns every service on the topics."""
    assert (
        await catalog.post("/projects", json={"code": "shop", "name": "Shop", "gitlab_group": "acme"}, headers=ADMIN)
    ).status_code == 201
    made = []
    for code in codes:
        answer = await catalog.post(
            "/projects/shop/services",
            headers=ADMIN,
            json={
                "code": f"{code}-{uuid.uuid4().hex[:8]}",
                "name": code.title(),
                "group": "com.acme",
                "type": "go-http",
            },
        )
        assert answer.status_code == 201, answer.text
        made.append(answer.json())
    return made


async def versions_of(versioning, service: dict[str, Any], count: int) -> list[dict[str, Any]] | None:
    answer = await versioning.get(f"/projects/shop/services/{service['code']}/versions", headers=ADMIN)
    return answer.json() if answer.status_code == 200 and len(answer.json()) >= count else None


async def test_one_huge_hook_stops_nothing(service_settings: Settings) -> None:
    """A success hook with a 2 MB commit message, then ordinary hooks of another service: the other's
    versions appear, and the huge one becomes a version too, its message trimmed with a marker."""
    async with (
        running(create_catalog(service_settings)) as catalog,
        running(create_versioning(service_settings)) as versioning,
    ):
        big, other = await make_services(catalog, "big", "other")
        huge = await versioning.post(
            "/webhooks/gitlab", headers=hook_headers(big, "huge-1"), json=pipeline_hook(big, 1, message="x" * 2_000_000)
        )
        assert huge.status_code == 202, huge.text
        for pipeline_id in (1, 2, 3):
            answer = await versioning.post(
                "/webhooks/gitlab",
                headers=hook_headers(other, f"other-{pipeline_id}"),
                json=pipeline_hook(other, pipeline_id),
            )
            assert answer.status_code == 202, answer.text
        found = await eventually(lambda: versions_of(versioning, other, 3), timeout=60)
        assert sorted(v["pipeline_id"] for v in found) == [1, 2, 3]
        [version] = await eventually(lambda: versions_of(versioning, big, 1), timeout=60)
        assert len(version["commit_message"]) == MAX_TEXT
        assert (
            version["commit_message"].endswith("more characters]") and "trimmed by Gantry" in version["commit_message"]
        )

        async def relayed() -> dict[str, Any] | None:  # the versions' events leave just after they are made
            ready = (await versioning.get("/readyz")).json()
            return ready if ready["outbox_pending"] == 0 else None

        ready = await eventually(relayed, timeout=30)
        assert ready["outbox_dead_letters"] == []


async def test_an_outbox_row_too_large_is_set_aside_and_an_admin_decides(service_settings: Settings) -> None:
    """A row written before the bounds (or past a lowered broker limit) cannot be sent: after a few
    tries it is dead-lettered; other services' events go on; its own service's wait until an org
    admin discards or retries it."""
    settings = service_settings.model_copy(update={"kafka_max_message_bytes": 65_536})
    versioning_app = create_versioning(settings)
    async with (
        running(create_catalog(settings)) as catalog,
        running(versioning_app) as versioning,
        TopicReader(settings.kafka_bootstrap, "pipeline.succeeded") as topic,
    ):
        stuck, other = await make_services(catalog, "stuck", "flowing")
        await eventually(lambda: _known(versioning, stuck))
        runtime = versioning_app.state.runtime
        async with runtime.uow.begin() as session:  # as an older Gantry, without the bounds, wrote them
            for pipeline_id, message in ((1, "y" * 200_000), (2, "small")):
                data = PipelineSucceeded(
                    service_id=stuck["id"],
                    project="shop",
                    service=stuck["code"],
                    pipeline_id=pipeline_id,
                    ref="main",
                    sha="a" * 40,
                    commit_message=message,
                )
                event = new_event(
                    Topic.PIPELINE_SUCCEEDED, data, source="gantry/versioning", subject=f"shop/{stuck['code']}"
                )
                add_event(session, Topic.PIPELINE_SUCCEEDED, event, key=stuck["id"])
        answer = await versioning.post(
            "/webhooks/gitlab", headers=hook_headers(other, "flow-1"), json=pipeline_hook(other, 7)
        )
        assert answer.status_code == 202
        await eventually(lambda: versions_of(versioning, other, 1), timeout=60)

        ready = await eventually(lambda: _with_dead_letter(versioning), timeout=30)
        [dead] = ready["outbox_dead_letters"]
        assert dead["topic"] == "pipeline.succeeded" and "MessageSizeTooLargeError" in dead["reason"]
        assert ready["outbox_held"] == 1 and ready["ready"] is True
        listed = await versioning.get("/outbox/dead-letters", headers=token("shop:project-owner"))
        assert listed.status_code == 403
        [row] = (await versioning.get("/outbox/dead-letters", headers=ADMIN)).json()
        assert row["outbox_id"] == dead["outbox_id"] and row["payload_bytes"] > 200_000
        missing = await versioning.delete("/outbox/dead-letters/999999", headers=ADMIN)
        assert missing.status_code == 404 and "gantry outbox list" in missing.json()["detail"]

        discarded = await versioning.delete(f"/outbox/dead-letters/{dead['outbox_id']}", headers=ADMIN)
        assert discarded.status_code == 200
        held = await topic.wait_for(lambda _t, v: (v.get("data") or {}).get("service_id") == stuck["id"], timeout=30)
        assert held["data"]["pipeline_id"] == 2, "the row that waited behind it went on"
        await eventually(lambda: versions_of(versioning, stuck, 1), timeout=30)
        assert (await versioning.get("/readyz")).json()["outbox_dead_letters"] == []
        async with runtime.uow.sessions() as session:
            rows = (
                await session.exec(
                    select(OutboxMessage)
                    .where(OutboxMessage.key == stuck["id"])
                    .where(OutboxMessage.topic == "pipeline.succeeded")
                )
            ).all()
        assert [json.loads(r.payload)["data"]["pipeline_id"] for r in rows] == [2], "the discarded row is gone"


async def _known(versioning, service: dict[str, Any]) -> bool:
    answer = await versioning.get(f"/projects/shop/services/{service['code']}/versions", headers=ADMIN)
    return answer.status_code == 200


async def _with_dead_letter(versioning) -> dict[str, Any] | None:
    state = (await versioning.get("/readyz")).json()
    return state if state["outbox_dead_letters"] else None


async def test_hooks_wait_on_the_bus_while_versioning_is_down(service_settings: Settings) -> None:
    """The gateway takes hooks with versioning (and so its database) down; nothing is lost: versioning
    applies them when it is back."""
    async with (
        running(create_catalog(service_settings)) as catalog,
        TopicReader(service_settings.kafka_bootstrap, "service.created") as topic,
    ):
        [service] = await make_services(catalog, "web")
        await topic.wait_for(lambda _t, v: (v.get("data") or {}).get("service_id") == service["id"])  # published
    async with running(create_gateway(service_settings)) as gateway:
        for pipeline_id, status in ((1, "running"), (1, "success"), (2, "success")):
            answer = await gateway.post(
                "/webhooks/gitlab",
                headers=hook_headers(service, f"d-{pipeline_id}-{status}"),
                json=pipeline_hook(service, pipeline_id, status),
            )
            assert answer.status_code == 202 and answer.json()["accepted"], answer.text
    async with running(create_versioning(service_settings)) as versioning:
        found = await eventually(lambda: versions_of(versioning, service, 2), timeout=60)
        assert sorted(v["pipeline_id"] for v in found) == [1, 2]


@pytest.fixture
def door_settings(embedded_kafka: str, tmp_path, unique_id: str) -> Settings:
    return Settings(
        home=tmp_path,
        kafka_bootstrap=embedded_kafka,
        secret=SECRET,
        kafka_group_prefix=f"t{unique_id}",
        kafka_fetch_max_wait_ms=10,
        kafka_idempotence=False,
        kafka_session_timeout_ms=1000,
        webhook_max_bytes=1_048_576,
    )


async def test_the_door_checks_the_cheap_things_first(
    door_settings: Settings, unique_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    scm_project_id = f"local-{unique_id}"
    good = {"X-Gitlab-Event": "Pipeline Hook", "X-Gitlab-Token": webhook_secret(SECRET, scm_project_id)}
    body = {
        "object_kind": "pipeline",
        "project": {"id": scm_project_id, "path_with_namespace": "acme/new"},
        "object_attributes": {"id": 1, "ref": "main", "sha": "a" * 40, "status": "success"},
    }
    async with (
        running(create_gateway(door_settings)) as gateway,
        TopicReader(door_settings.kafka_bootstrap, "gitlab.hook.received") as topic,
    ):
        anonymous = await gateway.post("/webhooks/gitlab", json=body, headers={"X-Gitlab-Event": "Pipeline Hook"})
        assert anonymous.status_code == 401 and "X-Gitlab-Token is missing" in anonymous.json()["detail"]
        deep = await gateway.post("/webhooks/gitlab", content=b"[" * 100_000 + b"]" * 100_000, headers=good)
        assert deep.status_code == 400 and "deeper than 32" in deep.json()["detail"]
        nested: Any = 1
        for _ in range(40):  # within Python's own limits, past Gantry's
            nested = [nested]
        deep_enough = await gateway.post("/webhooks/gitlab", json={**body, "builds": nested}, headers=good)
        assert deep_enough.status_code == 400 and "deeper than 32" in deep_enough.json()["detail"]
        surrogate = json.dumps({**body, "commit": {"message": "\ud800"}}).encode()
        lone = await gateway.post("/webhooks/gitlab", content=surrogate, headers=good)
        assert lone.status_code == 400 and "not valid Unicode" in lone.json()["detail"]
        forged = await gateway.post("/webhooks/gitlab", json=body, headers={**good, "X-Gitlab-Token": "guess"})
        assert forged.status_code == 401 and f"GitLab project {scm_project_id}" in forged.json()["detail"]
        shapeless = await gateway.post("/webhooks/gitlab", json={"project": {"id": scm_project_id}}, headers=good)
        assert shapeless.status_code == 422 and "object_attributes" in shapeless.json()["detail"]
        too_big = await gateway.post("/webhooks/gitlab", content=b" " * 1_100_000, headers=good)
        assert too_big.status_code == 413 and "GANTRY_WEBHOOK_MAX_BYTES" in too_big.json()["detail"]
        api_too_big = await gateway.post("/api/gateway/routes", content=b" " * 1_100_000, headers=ADMIN)
        assert api_too_big.status_code == 413 and "GANTRY_REQUEST_MAX_BYTES" in api_too_big.json()["detail"]

        # a repository no service has yet: its token is checked all the same, then the hook is queued
        capsys.readouterr()
        accepted = await gateway.post("/webhooks/gitlab", json=body, headers={**good, "Idempotency-Key": unique_id})
        assert accepted.status_code == 202 and accepted.json()["event_id"] == unique_id
        # one log line per hook: its access line says it was queued
        said = [json.loads(line) for line in capsys.readouterr().err.splitlines() if unique_id in line]
        assert [(line["event"], line["logger"]) for line in said] == [("hook queued", "gantry.access")], said
        assert (said[0]["status"], said[0]["pipeline_id"], said[0]["pipeline_status"]) == (202, 1, "success")
        queued = await topic.wait_for(lambda _t, v: v["id"] == unique_id)
        assert queued["data"]["scm_project_id"] == scm_project_id and queued["correlation_id"] == unique_id
        ours = [v["id"] for v in topic.of_type("gitlab.hook.received") if v["data"]["scm_project_id"] == scm_project_id]
        assert ours == [unique_id], "nothing refused was queued"


async def _raw_request(port: int, head: bytes, body_chunks: int, chunk: bytes) -> tuple[bytes, int]:
    """Send ``head`` then up to ``body_chunks`` chunks while reading; returns the answer and how many
    chunks went before it came (the server stopped reading)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = bytearray()

    async def read() -> None:
        try:
            while data := await reader.read(65_536):
                answer.extend(data)
        except ConnectionError:
            pass

    reading = asyncio.create_task(read())
    writer.write(head)
    sent = 0
    try:
        while sent < body_chunks and not answer and not reading.done():
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 5)
            sent += 1
    except (ConnectionError, TimeoutError):
        pass
    await asyncio.wait_for(reading, 10)
    writer.close()
    return bytes(answer), sent


async def test_an_oversized_body_is_refused_without_being_read(
    door_settings: Settings, ports: dict[str, socket.socket]
) -> None:
    """A declared 30 MB body is answered 413 at once; an undeclared (chunked) one is cut off at the
    limit; a body without a token is refused before a byte of it is read."""
    port = ports["gateway"].getsockname()[1]
    settings = door_settings.model_copy(update={"port_base": port})
    async with serving(create_gateway(settings), ports["gateway"]):
        started = time.monotonic()
        declared = (
            b"POST /webhooks/gitlab HTTP/1.1\r\nHost: x\r\nX-Gitlab-Event: Pipeline Hook\r\n"
            b"X-Gitlab-Token: t\r\nContent-Length: 31457280\r\n\r\n"
        )
        answer, sent = await _raw_request(port, declared, 30, b"x" * 1_048_576)
        declared_seconds = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 413") and b"GANTRY_WEBHOOK_MAX_BYTES" in answer
        assert sent < 30, "the answer came before the 30 MB were sent"

        chunked = (
            b"POST /webhooks/gitlab HTTP/1.1\r\nHost: x\r\nX-Gitlab-Event: Pipeline Hook\r\n"
            b"X-Gitlab-Token: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
        answer, sent = await _raw_request(port, chunked, 30, piece)
        assert answer.startswith(b"HTTP/1.1 413")
        assert sent < 30

        started = time.monotonic()
        anonymous = (
            b"POST /webhooks/gitlab HTTP/1.1\r\nHost: x\r\nX-Gitlab-Event: Pipeline Hook\r\n"
            b"Content-Length: 31457280\r\n\r\n"
        )
        answer, sent = await _raw_request(port, anonymous, 30, b"x" * 1_048_576)
        anonymous_seconds = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 413") or answer.startswith(b"HTTP/1.1 401")
        assert sent < 30
    print(
        f"\n30 MB declared, with a token: refused in {declared_seconds:.3f}s; without a token: {anonymous_seconds:.3f}s"
    )


@pytest.fixture
def lone_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, to take away."""
    with EmbeddedBroker() as broker:
        yield broker


# The gateway stops while the broker is still away: its consumer's thread must end cleanly (it
# died with aiokafka's CancelledError before, which pytest reports as this warning).
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
async def test_a_broker_outage_refuses_hooks_with_retry_after(tmp_path, lone_broker: EmbeddedBroker) -> None:
    broker = lone_broker
    settings = Settings(
        home=tmp_path,
        kafka_bootstrap=broker.bootstrap,
        secret=SECRET,
        kafka_idempotence=False,
        kafka_fetch_max_wait_ms=10,
        kafka_session_timeout_ms=1000,
    )
    body = {
        "object_kind": "pipeline",
        "project": {"id": 9, "path_with_namespace": "acme/x"},
        "object_attributes": {"id": 1, "ref": "main", "sha": "a" * 40, "status": "success"},
    }
    headers = {"X-Gitlab-Event": "Pipeline Hook", "X-Gitlab-Token": webhook_secret(SECRET, "9")}
    async with running(create_gateway(settings)) as gateway:
        assert (await gateway.post("/webhooks/gitlab", json=body, headers=headers)).status_code == 202
        broker.stop()
        started = time.monotonic()
        refused = await gateway.post("/webhooks/gitlab", json=body, headers=headers)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "30"
        assert "not kept" in refused.json()["detail"] and "gantry pipeline report" in refused.json()["detail"]
        assert time.monotonic() - started < 10, "answered before GitLab's own 10 s timeout"
