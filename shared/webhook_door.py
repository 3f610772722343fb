"""GitLab's webhook, as the front door takes it: check, queue on the bus, answer 202 at once.

The cheap checks come first: the event kind and the token's presence (nothing read yet), the body's
size (while it is read, ``shared.limits``), its nesting depth, then the token itself — derived from
the installation secret and the GitLab project id the hook carries, so it is checked before
anything is stored, whether or not the repository's service is known yet. A checked hook is
published as received (free text trimmed) on ``gitlab.hook.received``, keyed by its GitLab project,
its delivery id as the event id; versioning applies it from there with its inbox. A database outage
therefore never fails a hook (GitLab does not redeliver one and disables a hook that keeps failing);
only a broker outage does, with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import uuid
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.types import Scope

from shared import gitlab_hook, tracing
from shared.access import note_outcome
from shared.auth import webhook_secret
from shared.errors import NotAuthenticated
from shared.events import Envelope, HookReceived, Topic
from shared.fast_lane import fast_lane
from shared.logging import get_logger
from shared.problems import problem_response
from shared.service import Runtime, get_runtime

log = get_logger(__name__)
router = APIRouter(tags=["webhooks"])
HOOK_PATH = "/webhooks/gitlab"
PUBLISH_TIMEOUT_SECONDS = 5.0  # GitLab gives up on a hook after 10 s
RETRY_AFTER_SECONDS = 30
ENVELOPE_ROOM = 8_192  # the envelope's own fields around the hook, with room to spare
_PLAIN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# the headers the door reads (it reads them itself: see receive_gitlab_hook), for the API's schema
HEADERS = [
    {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": text}
    for name, text in (
        ("X-Gitlab-Event", "only 'Pipeline Hook' is read; any other kind is answered 200 and ignored"),
        ("X-Gitlab-Token", "the webhook secret: derived from the installation secret and the GitLab project id"),
        ("X-Gitlab-Event-UUID", "GitLab's id of this delivery"),
        ("Idempotency-Key", "the same on every resend of one hook: it is applied once"),
        ("X-Correlation-ID", "carried by the events the hook causes"),
    )
]


class HookReceipt(BaseModel):
    accepted: bool
    pipeline_id: int | None = None
    status: str | None = None
    event_id: str | None = None
    detail: str


@router.post(
    HOOK_PATH,
    response_model=HookReceipt,
    status_code=202,
    responses={
        200: {"description": "not a Pipeline Hook: acknowledged and ignored"},
        400: {"description": "not JSON, or nested too deeply"},
        401: {"description": "X-Gitlab-Token missing or not this repository's"},
        413: {"description": "the body is larger than GANTRY_WEBHOOK_MAX_BYTES"},
        422: {"description": "not a Pipeline Hook body"},
        503: {"description": "the broker cannot take the hook now: GitLab may resend it after Retry-After"},
    },
    openapi_extra={"parameters": HEADERS},
)
@fast_lane
async def receive_gitlab_hook(request: Request) -> Response:
    """GitLab's webhook: a Pipeline Hook is checked, queued for versioning and answered 202.

    It reads its headers itself and answers with a ready-made response: the hot path of every
    hook, answered by its short stack (``shared.fast_lane``), clear of FastAPI's per-parameter
    dependency solving and response re-validation."""
    runtime = get_runtime(request)
    headers = _read_headers(request.scope)
    x_gitlab_event, x_gitlab_token = headers.get("x-gitlab-event"), headers.get("x-gitlab-token")
    if x_gitlab_event != gitlab_hook.PIPELINE_HOOK:
        ignored = f"{x_gitlab_event or 'no X-Gitlab-Event'} ignored: only Pipeline Hook is read"
        return _receipt(200, HookReceipt(accepted=False, detail=ignored))
    if not x_gitlab_token:
        raise NotAuthenticated("X-Gitlab-Token is missing: GitLab sends the secret token the hook was registered with")
    body = await request.body()
    document = gitlab_hook.read_json(body)
    project_id = _verified_project(document, x_gitlab_token, runtime.secret)
    hook = gitlab_hook.parse_pipeline_hook(document)
    delivery = delivery_id(headers.get("idempotency-key") or headers.get("x-gitlab-event-uuid"))
    envelope = _received(runtime, document, body, hook, project_id, delivery, headers.get("x-correlation-id"))
    request.state.correlation_id = envelope.correlation_id
    if not await _publish(runtime, envelope, key=project_id):
        return problem_response(
            503,
            "the event bus cannot take the hook now: it was not kept. Resend it from the "
            "hook's settings in GitLab (or `gantry pipeline report`) once Kafka answers",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    attrs = hook.object_attributes
    # said in the request's access line: one line per hook
    note_outcome(
        request.state,
        "hook queued",
        event_id=delivery,
        scm_project_id=project_id,
        pipeline_id=attrs.id,
        pipeline_status=attrs.status,
    )
    return _receipt(202, _queued(attrs, delivery))


_READ_HEADERS = frozenset(
    name.encode()
    for name in ("x-gitlab-event", "x-gitlab-token", "idempotency-key", "x-gitlab-event-uuid", "x-correlation-id")
)


def _read_headers(scope: Scope) -> dict[str, str]:
    """The headers the door reads, the first of each name, in one pass over the request's: 0.7 µs
    a hook where five look-ups through Starlette's ``Headers`` took 3.2 µs."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _READ_HEADERS:
            found.setdefault(name.decode(), value.decode("latin-1"))
    return found


def _received(
    runtime: Runtime,
    document: dict[str, Any],
    body: bytes,
    hook: gitlab_hook.PipelineHook,
    project_id: str,
    delivery: str,
    correlation_id: str | None,
) -> Envelope:
    """The checked hook as the event versioning applies: received, its free text trimmed."""
    return Envelope(
        id=delivery,
        type=Topic.HOOK_RECEIVED.value,
        source=f"gantry/{runtime.name}",
        subject=hook.project.path_with_namespace,
        correlation_id=correlation_id or delivery,
        data=HookReceived(
            scm_project_id=project_id,
            event=gitlab_hook.PIPELINE_HOOK,
            delivery_id=delivery,
            hook=gitlab_hook.bounded(document, runtime.settings.kafka_max_message_bytes - ENVELOPE_ROOM, body=body),
        ).model_dump(mode="json"),
    )


def _receipt(status: int, receipt: HookReceipt) -> Response:
    return Response(receipt.model_dump_json(), status_code=status, media_type="application/json")


def _verified_project(document: object, token: str, secret: str) -> str:
    """The GitLab project the hook names, once its token is that project's webhook secret."""
    project_id = gitlab_hook.project_id_of(document)
    if not hmac.compare_digest(token.encode(), webhook_secret(secret, project_id).encode()):
        raise NotAuthenticated(
            f"X-Gitlab-Token is not the webhook secret of GitLab project {project_id}: re-register the "
            "hook (its token is derived from the installation secret and the project id)"
        )
    return project_id


def _queued(attrs: gitlab_hook.HookAttributes, delivery: str) -> HookReceipt:
    then = (
        " and, when every job's latest attempt succeeded, gives its commit a version"
        if attrs.status == "success"
        else ""
    )
    return HookReceipt(
        accepted=True,
        pipeline_id=attrs.id,
        status=attrs.status,
        event_id=delivery,
        detail=f"queued: versioning records status {attrs.status!r} of pipeline {attrs.id}{then}",
    )


def delivery_id(given: str | None) -> str:
    """The hook's delivery id (GitLab's Idempotency-Key, the same on every resend, or its event
    UUID) as the event id; one that does not fit an event id is hashed to a stable UUID."""
    if not given:
        return str(uuid.uuid4())
    return given if _PLAIN_ID.match(given) else str(uuid.uuid5(uuid.NAMESPACE_URL, given))


async def _publish(runtime: Runtime, envelope: Envelope, *, key: str) -> bool:
    value = envelope.model_dump_json().encode()
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):  # unlike wait_for, no task per hook
            await runtime.producer.send_and_wait(Topic.HOOK_RECEIVED.value, key, value, tracing.current_headers())
    except (KafkaError, TimeoutError) as exc:
        log.error("hook refused: the broker did not take it", event_id=envelope.id, error=repr(exc))
        return False
    return True
