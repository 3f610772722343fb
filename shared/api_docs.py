"""Each service's OpenAPI document and its Swagger UI, as a client generator and a browser need them.

The document: readable operation ids (the route function's name in camelCase), the bearer scheme on
every operation that reads the caller's token, and every error an operation can answer documented
with the problem schema (``shared.problems``). The page: Swagger UI from assets the service serves
itself (it works offline), loading the document relative to the page, so ``/api/<service>/docs``
through the gateway loads ``/api/<service>/openapi.json``; the document then names
``/api/<service>`` as its server, so "Try it out" goes through the gateway too.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute, APIRouter
from pydantic.json_schema import models_json_schema

from shared.errors import NotFound
from shared.problems import MEDIA_TYPE, Problem

router = APIRouter(include_in_schema=False)
FORWARDED_PREFIX = "x-forwarded-prefix"  # set by the gateway's proxy: where the caller reached the service
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")
_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}
_WRITES = {"post", "put", "patch", "delete"}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# what each error means when an operation's own ``responses`` does not say better
ERRORS = {
    400: "the request cannot be read (a cursor Gantry did not give, a body that is not JSON)",
    401: "no bearer token, or one Gantry does not accept",
    403: "the caller's roles do not allow this",
    404: "what the path names does not exist",
    409: "it conflicts with the current state (or a concurrent write): read it again",
    413: "the request body is larger than the service takes",
    422: "a parameter or a field of the body is not valid: `errors` says which",
}


def operation_id(route: APIRoute) -> str:
    """``create_service`` → ``createService``."""
    first, *rest = route.name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def links_to(status: int, parameter: str, field: str, *operation_ids: str) -> dict[int | str, dict[str, Any]]:
    """``responses`` of an operation that makes something: OpenAPI links saying which field of its
    answer names it in the operations that take it (``parameter``), for clients and test generators."""
    where = f"$response.body#/{field}"
    return {
        status: {
            "links": {op: {"operationId": op, "parameters": {parameter: where}} for op in operation_ids},
        }
    }


def install(api: FastAPI) -> None:
    """Replace the app's OpenAPI document with Gantry's (built once, on first ask)."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = document(api)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def document(api: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
    components = schema.setdefault("components", {})
    _, defs = models_json_schema([(Problem, "serialization")], ref_template="#/components/schemas/{model}")
    components.setdefault("schemas", {}).update(defs.get("$defs", {}))
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            _document_errors(method, operation)
    for unused in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(unused, None)
    return schema


def _document_errors(method: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    parameters = operation.get("parameters", [])
    statuses = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
    if operation.get("security"):
        statuses |= {401, 403}
    if parameters or "requestBody" in operation:
        statuses.add(422)
    if "requestBody" in operation:
        statuses |= {400, 413}  # 400: a body that cannot be parsed at all
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    if any(p.get("name") == "cursor" for p in parameters):
        statuses.add(400)
    if method in _WRITES:
        statuses.add(409)
    for status in sorted(statuses):
        given = responses.get(str(status), {})
        if "content" in given and "HTTPValidationError" not in str(given):
            continue  # the route documents its own body for it (readyz's 503)
        description = given.get("description") if str(status) in responses and status != 422 else None
        responses[str(status)] = {
            "description": description or ERRORS.get(status, "an error"),
            **({"headers": given["headers"]} if "headers" in given else {}),
            "content": {MEDIA_TYPE: {"schema": PROBLEM_REF}},
        }


def served_prefix(request: Request, own_path: str) -> str:
    """Where the caller reached this service's paths: the gateway's ``/api/<service>``, or the
    prefix this route is served under (the gateway's own ``/api/gateway``), or nothing."""
    forwarded = request.headers.get(FORWARDED_PREFIX, "").rstrip("/")
    mounted = request.url.path[: -len(own_path)] if request.url.path.endswith(own_path) else ""
    prefix = (forwarded if _PREFIX.match(forwarded) else "") + mounted
    return prefix if _PREFIX.match(prefix) else ""


@router.get("/openapi.json")
async def openapi_document(request: Request) -> JSONResponse:
    """The OpenAPI document, its server being where the caller reached the service."""
    schema = request.app.openapi()
    prefix = served_prefix(request, "/openapi.json")
    return JSONResponse({**schema, "servers": [{"url": prefix or "/"}]})


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI, its scripts served here: nothing is fetched from elsewhere."""
    return HTMLResponse(_PAGE.replace("{title}", request.app.title))


@router.get("/docs/assets/{name}")
async def swagger_asset(name: str) -> Response:
    if name not in _ASSETS:
        raise NotFound(f"no docs asset {name!r}")
    content = files("fastapi_offline").joinpath("static", name).read_bytes()
    return Response(content, media_type=_ASSETS[name], headers={"cache-control": "public, max-age=86400"})


# relative addresses: the page works wherever it is served (/docs, /api/<service>/docs)
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} API</title>
<link rel="icon" type="image/png" href="docs/assets/favicon.png">
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset].filter(Boolean),
  layout: "BaseLayout"
});
</script>
</body>
</html>
"""
