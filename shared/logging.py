"""structlog JSON logs, bound to service, event id and correlation id.

Everything (uvicorn, faust, aiokafka, our code) goes out as one JSON object per line on stderr.
``bind_event`` binds an event's ids to the current task's context for the lines that follow.
``service`` is always the service that wrote the line; a service of the domain a line is about is
``service_code`` (a line that passes ``service=`` has it moved there, so it never hides the writer).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from shared.events import Envelope

_EMITTER: dict[str, str] = {}


def _keep_emitting_service(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """``service`` names the service that wrote the line; any other value given is ``service_code``."""
    emitter = _EMITTER.get("service")
    if emitter is None:
        return event
    given = event.get("service")
    if given is not None and given != emitter:
        event.setdefault("service_code", given)
    event["service"] = emitter
    return event


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    _keep_emitting_service,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


class _StderrLines:
    """Where Gantry's own lines go: straight to ``sys.stderr`` as it is when the line is written
    (one line, one write; stderr is line-buffered), not through the standard library's logging,
    which cost three times as much per line (a LogRecord, the caller's frame, a handler's lock).
    Found at each write, so a test that swaps stderr sees the lines of loggers made before."""

    def __init__(self, name: str = "gantry", *_args: Any) -> None:  # structlog's logger factory
        self.name = name  # what ``add_logger_name`` reads, as from a standard library logger

    def msg(self, message: str) -> None:
        sys.stderr.write(message + "\n")

    debug = info = warning = warn = error = critical = exception = fatal = msg


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """The standard library's lines to ``sys.stderr`` as it is when each is written, as Gantry's own
    (``_StderrLines``). A handler holding the stream it was made with kept writing to it once it was
    closed (a test's captured stderr), and every later line, asyncio's debug lines among them, came
    out as a ``--- Logging error ---`` traceback."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        return None  # StreamHandler's own set-up: the stream is always the current one


def configure_logging(service: str, level: str = "info") -> None:
    _EMITTER["service"] = service
    structlog.configure(
        processors=[  # Gantry's own lines
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=_StderrLines,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        cache_logger_on_first_use=True,
    )
    # everything else's lines (uvicorn, faust, aiokafka) through the standard library, in the same JSON
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = _CurrentStderr()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode", "uvicorn.access", "sqlalchemy.engine"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def bind_event(envelope: Envelope) -> None:
    structlog.contextvars.bind_contextvars(
        event_id=envelope.id, correlation_id=envelope.correlation_id, event_type=envelope.type
    )


def unbind_event() -> None:
    structlog.contextvars.unbind_contextvars("event_id", "correlation_id", "event_type")


def get_logger(name: str) -> Any:
    """A module's logger: its lines carry ``logger`` (the module) beside ``service``."""
    return structlog.get_logger(name)
