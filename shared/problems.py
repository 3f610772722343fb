"""Every error answer of every Gantry service, in one shape: RFC 9457's ``application/problem+json``.

``type`` (a URN naming the problem), ``title`` (the status's name), ``status``, ``detail`` (for a
person: what is wrong and how to fix it) and ``code``, a stable word a program can branch on. A 422
also lists each field that is wrong in ``errors``, so a client can point at it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from shared.errors import GantryError
from shared.logging import get_logger

log = get_logger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:gantry:problem:"

# the stable code of each status a Gantry service answers with (a GantryError may name its own)
CODES: dict[int, str] = {
    400: "bad-request",
    401: "not-authenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    422: "invalid-input",
    500: "internal-error",
    502: "upstream-unavailable",
    503: "unavailable",
    504: "upstream-timeout",
}


class FieldProblem(BaseModel):
    """One field that is wrong: where (``loc``, e.g. ``["body", "replicas"]``) and what."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An error answer (RFC 9457 problem details)."""

    type: str = Field(description="a URN naming the kind of problem, e.g. urn:gantry:problem:not-found")
    title: str = Field(description="the HTTP status's name")
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="what is wrong and how to fix it, for a person")
    code: str = Field(pattern=r"^[a-z][a-z0-9-]*$", description="a stable code a program can branch on")
    errors: list[FieldProblem] | None = Field(default=None, description="422 only: each field that is wrong")


def code_for(status: int) -> str:
    return CODES.get(status, "error")


def problem(
    status: int, detail: str, *, code: str | None = None, errors: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The problem document of an error answer."""
    chosen = code or code_for(status)
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + chosen,
        "title": _title(status),
        "status": status,
        "detail": detail,
        "code": chosen,
    }
    if errors is not None:
        body["errors"] = [dict(error) for error in errors]
    return body


def problem_response(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content=problem(status, detail, code=code, errors=errors),
        media_type=MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def problem_bytes(status: int, detail: str, *, code: str | None = None) -> bytes:
    """The same document as bytes, for pure ASGI middleware that answers before FastAPI runs."""
    return json.dumps(problem(status, detail, code=code)).encode()


def field_problems(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """pydantic's validation errors as ``FieldProblem``s (their input left out: it may be a secret)."""
    return [
        {
            "loc": [part if isinstance(part, int) else str(part) for part in error["loc"]],
            "msg": error["msg"],
            "type": str(error["type"]),
        }
        for error in errors
    ]


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def install(api: FastAPI) -> None:
    """Answer every error of ``api`` as a problem: Gantry's own, FastAPI's validation, the
    database's refusal of a racing write, Starlette's 404/405, and anything unforeseen (500)."""
    api.add_exception_handler(GantryError, _gantry_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(IntegrityError, _integrity_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(Exception, _unforeseen)


async def _gantry_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GantryError)
    return problem_response(exc.status_code, exc.detail, code=getattr(exc, "code", None))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422s: ``detail`` says in one line which fields and what is wrong, ``errors``
    lists them one by one."""
    assert isinstance(exc, RequestValidationError)
    errors = field_problems(exc.errors())
    detail = "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in errors)
    return problem_response(422, detail, errors=errors)


async def _integrity_error(_request: Request, exc: Exception) -> JSONResponse:
    """Two requests raced to write the same thing; the database kept one. Nothing half-written."""
    log.warning("concurrent write refused by the database", error=str(exc).splitlines()[0])
    return problem_response(
        409, "another request changed the same thing at the same moment: read it again and retry", code="conflict"
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own answers: no such path (404), or a path that does not take this method (405,
    whose ``Allow`` names every method the path takes, not only the first route's)."""
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(
            405, f"{request.url.path} does not take {request.method}: use {headers['Allow']}", headers=headers
        )
    if exc.status_code == 404 and exc.detail == "Not Found":
        return problem_response(404, f"there is no endpoint {request.url.path}: see /docs", headers=headers)
    return problem_response(exc.status_code, str(exc.detail), headers=headers)


async def _unforeseen(_request: Request, exc: Exception) -> JSONResponse:
    log.error("request failed", error=repr(exc))
    return problem_response(500, "the service failed to answer this request: see its log")


def allowed_methods(request: Request) -> list[str]:
    """Every method of every route whose path matches this request's (routers included in the app
    are walked through: each of their routes counts)."""
    path = request.url.path
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        template, taken = route.path, route.methods
        if template and taken and _path_regex(template).match(path):
            methods |= taken
    return sorted(methods)


@lru_cache(maxsize=512)
def _path_regex(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]
