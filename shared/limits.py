"""A request body limit enforced while the body is read, before anything parses it.

A declared ``Content-Length`` over the limit is answered 413 at once, unread; a body that grows past
the limit while it streams in (chunked, or lying about its length) stops being read at the byte
that crossed it. Either way the caller learns the limit and the setting that raises it.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.problems import MEDIA_TYPE, problem_bytes


class BodyTooLarge(Exception):
    """Raised from ``receive`` inside the app; turned into the 413 here."""


class BodyLimit:
    """Pure ASGI middleware: ``limit_for(path)`` gives the bytes a request to ``path`` may carry."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], tuple[int, str]]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit, setting)
            return
        received, started = 0, False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except Exception as exc:  # also inside the exception group a middleware's task group makes
            if started or not _is_too_large(exc):
                raise
            await _refuse(send, limit, setting)


def _is_too_large(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(BodyTooLarge) is not None
    return isinstance(exc, BodyTooLarge)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, limit: int, setting: str) -> None:
    detail = f"the request body is larger than {limit} bytes: send less, or raise {setting} if such bodies are expected"
    body = problem_bytes(413, detail)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            # the rest of the body is not read: the connection cannot carry another request
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
