"""Every change on record: who asked a service to change what, when, and what came of it.

Every write request (any method but GET, HEAD, OPTIONS) to a route of a service's own API is
recorded by that service as one ``audit.recorded`` event: the actor and their roles, the action
(``<service>.<operation>``), the target's ids (from the path and the body), the request's
correlation id, the HTTP status answered and, for 400 and above, the error's detail.

Nothing lost, nothing twice: the first transaction of the request that writes something carries
the record in its outbox (``TRANSACTION_HOOK``), so a change and its record commit together or not
at all. A request that commits nothing (refused, failed, or nothing to change) is recorded when
it ends, in a small transaction of its own; one that failed after it committed a change gets that
failure recorded too (same ``request_id``).

Not recorded here: GitLab's hooks (not a person's write; what they cause is on the bus already)
and the gateway's proxy (the service behind it records the write).
"""

from __future__ import annotations

import json
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import APIRoute
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import Principal
from shared.events import AuditRecorded, utcnow
from shared.limits import _is_too_large
from shared.logging import get_logger
from shared.outbox import TRANSACTION_HOOK, UnitOfWork, emit

log = get_logger(__name__)
READS = frozenset({"GET", "HEAD", "OPTIONS"})
NOT_RECORDED_TAGS = frozenset({"webhooks", "proxy"})
BODY_TARGETS = ("project", "service", "environment", "version")  # body fields that name a target
IDENTIFIERS = ("code", "name")  # what names the thing a POST to a collection creates, in that order
MAX_VALUE, MAX_REASON, MAX_ANSWER = 255, 1000, 4096

CURRENT: ContextVar[RequestRecord | None] = ContextVar("gantry_audit_record", default=None)


def note_principal(principal: Principal) -> None:
    """The request's actor, once its token is verified (``shared.service.current_user``)."""
    record = CURRENT.get()
    if record is not None:
        record.actor, record.roles = principal.user, sorted(principal.roles)


@dataclass
class RequestRecord:
    """One write request being answered: what its record will say, and whether it is written."""

    service: str
    scope: Scope
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    actor: str | None = None
    roles: list[str] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    answer: bytearray = field(default_factory=bytearray)
    status: int | None = None
    changed: bool = False  # a transaction carrying the record committed
    finished: bool = False

    @property
    def route(self) -> APIRoute | None:
        """The service's own route that took the request, when it is one whose writes are recorded."""
        route = self.scope.get("route")
        if not isinstance(route, APIRoute) or self.scope["method"] not in (route.methods or ()):
            return None
        return None if NOT_RECORDED_TAGS.intersection(str(tag) for tag in route.tags) else route

    # the transaction hook (shared.outbox.TransactionHook)
    def joins(self, session: AsyncSession) -> bool:
        route = self.route
        if self.finished or self.changed or route is None or not wrote(session):
            return False
        emit(session, self.data(route, route.status_code or 200, changed=True), correlation_id=self.correlation_id)
        return True

    def committed(self) -> None:
        self.changed = True

    @property
    def correlation_id(self) -> str | None:
        state = self.scope.get("state") or {}
        return state.get("correlation_id") if isinstance(state, dict) else None

    def data(self, route: APIRoute, outcome: int, *, changed: bool) -> AuditRecorded:
        return AuditRecorded(
            request_id=self.request_id,
            recorded_by=self.service,
            action=f"{self.service}.{route.name}",
            method=self.scope["method"],
            path=self.scope["path"][:MAX_VALUE],
            actor=self.actor,
            roles=self.roles,
            target=target_of(route.path_format, self.scope.get("path_params") or {}, self._json_body()),
            outcome=outcome,
            reason=reason_of(bytes(self.answer)) if outcome >= 400 else None,
            changed=changed,
            at=utcnow(),
        )

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


def wrote(session: AsyncSession) -> bool:
    """Whether the transaction changed anything: an event queued, rows pending, flushed or bulk-written."""
    return bool(
        session.info.get("outbox") or session.info.get("wrote") or session.new or session.dirty or session.deleted
    )


def target_of(path_format: str, path_params: dict[str, Any], body: Any) -> dict[str, str]:
    """The ids a request names: every path parameter (``name``/``code`` called after the collection
    before it: ``/routes/{name}`` → route), the body's project/service/environment/version, and
    for a POST to a collection (``/environments/{environment}/resources``) the body's code or name;
    a service named 'project/service' names its project too."""
    segments = path_format.strip("/").split("/")
    target: dict[str, str] = {}
    for index, segment in enumerate(segments):
        if segment.startswith("{") and (param := segment[1:-1].split(":")[0]) in path_params:
            key = _singular(segments[index - 1]) if param in IDENTIFIERS and index else param
            target[key] = str(path_params[param])[:MAX_VALUE]
    if not isinstance(body, dict):
        return target
    names = [field for field in BODY_TARGETS if isinstance(body.get(field), str)]
    if segments and not segments[-1].startswith("{"):
        identifier = next((field for field in IDENTIFIERS if isinstance(body.get(field), str)), None)
        if identifier is not None:
            target.setdefault(_singular(segments[-1]), body[identifier][:MAX_VALUE])
    for name in names:
        target.setdefault(name, body[name][:MAX_VALUE])
    if "project" not in target and "/" in target.get("service", ""):  # a route's 'project/service'
        target["project"], target["service"] = target["service"].split("/", 1)
    return target


def _singular(collection: str) -> str:
    collection = collection.replace("-", "_")
    return collection[:-1] if collection.endswith("s") else collection


def reason_of(answer: bytes) -> str | None:
    """An error answer's detail (``{"detail": …}``), else its text."""
    try:
        detail = json.loads(answer).get("detail")
    except (ValueError, AttributeError):
        detail = answer.decode("utf-8", "replace").strip()
    if detail in (None, ""):
        return None
    return (detail if isinstance(detail, str) else json.dumps(detail))[:MAX_REASON]


class AuditTrail:
    """Pure ASGI middleware: records each write request to this service's own API (see module doc).

    Sits inside the request-context middleware, so the request's correlation id is known."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service
        _watch_writes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READS:
            await self.app(scope, receive, send)
            return
        record = RequestRecord(self.service, scope)

        async def receive_kept() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                record.body += message.get("body", b"")
            return message

        async def send_watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = int(message["status"])
            elif message["type"] == "http.response.body" and (record.status or 0) >= 400:
                record.answer += message.get("body", b"")[: MAX_ANSWER - len(record.answer)]
            await send(message)

        token, hooked = CURRENT.set(record), TRANSACTION_HOOK.set(record)
        try:
            await self.app(scope, receive_kept, send_watched)
        except Exception as exc:
            record.status = record.status or (413 if _is_too_large(exc) else 500)
            raise
        finally:
            TRANSACTION_HOOK.reset(hooked)
            CURRENT.reset(token)
            record.finished = True
            if record.status is not None:  # None: cancelled before any answer (the client left)
                await _record_ending(scope, record)


async def _record_ending(scope: Scope, record: RequestRecord) -> None:
    """Record a request that committed no record, or that failed after it committed one."""
    route = record.route
    outcome = record.status or 500
    if route is None or (record.changed and outcome < 400):
        return
    try:
        uow: UnitOfWork = scope["app"].state.runtime.uow
        async with uow.begin() as session:
            emit(session, record.data(route, outcome, changed=False), correlation_id=record.correlation_id)
    except Exception as exc:  # the answer is sent: say loudly that its record is lost
        log.error("audit record lost", action=f"{record.service}.{route.name}", outcome=outcome, error=repr(exc))


def _note_flush(session: Session, _context: object) -> None:
    session.info["wrote"] = True


def _note_statement(state: ORMExecuteState) -> None:
    if not state.is_select:
        state.session.info["wrote"] = True


def _watch_writes() -> None:
    """Mark sessions that flushed rows or ran bulk writes, which ``session.new/dirty`` no longer show."""
    if not event.contains(Session, "after_flush", _note_flush):
        event.listen(Session, "after_flush", _note_flush)
        event.listen(Session, "do_orm_execute", _note_statement)
