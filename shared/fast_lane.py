"""A short way through a service for the one route that takes a machine's traffic: GitLab's hooks.

Every request to a Gantry service passes Starlette's error middleware, FastAPI's telemetry and
body-limit middleware, Gantry's own (access log, body limit, correlation id, audit trail), the
exception middleware, the router's match against every route (the webhook's is near the end of
the gateway's list, before the catch-all proxy) and FastAPI's request handler. For a webhook,
that stack was about two thirds of the CPU the gateway spent on it (py-spy, 64 connections).

An endpoint marked ``@fast_lane`` is answered, for its own method and exact path, by a stack built
from the same parts, in the same order: the app's handler of unforeseen errors (500 as a
problem), Gantry's middlewares but the audit trail (which never records hooks, see
``shared.audit``), the app's exception handlers (its problems) and the endpoint itself, called
with the request. What it does not get: FastAPI's dependency solving and response validation
(a lane endpoint reads the request and builds its response itself) and its telemetry middleware.
Any other method or path, and a request under a ``root_path``, takes the full stack, so a lane
can only make a request cheaper, never answer it differently.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.audit import AuditTrail

Endpoint = Callable[[Request], Awaitable[Response]]
E = TypeVar("E", bound=Endpoint)
MARK = "__gantry_fast_lane__"
LEFT_OUT: tuple[Any, ...] = (AuditTrail,)  # the middlewares a lane skips


def fast_lane(endpoint: E) -> E:
    """Mark ``endpoint`` (``async def f(request) -> Response``) to be answered by the short stack."""
    setattr(endpoint, MARK, True)
    return endpoint


class ServiceAPI(FastAPI):
    """FastAPI, with the marked routes answered by their short stack (built at the first request,
    when every middleware and exception handler is in place, as Starlette builds its own)."""

    _lanes: dict[tuple[str, str], ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            lanes = self._lanes if self._lanes is not None else self._build_lanes()
            lane = lanes.get((scope["method"], scope["path"]))
            if lane is not None:
                scope["app"] = self
                await lane(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def lane_routes(self) -> list[tuple[str, str]]:
        """The (method, path) pairs answered by a short stack."""
        return sorted(self._lanes if self._lanes is not None else self._build_lanes())

    def _build_lanes(self) -> dict[tuple[str, str], ASGIApp]:
        self._lanes = {}
        for context in iter_route_contexts(self.routes):  # included routers' routes, with their prefixes
            route, path = context.original_route, context.path
            if isinstance(route, APIRoute) and getattr(route.endpoint, MARK, False) and path and "{" not in path:
                for method in context.methods or ():
                    self._lanes[(method, path)] = self._lane(route)
        return self._lanes

    def _lane(self, route: APIRoute) -> ASGIApp:
        unforeseen = self.exception_handlers.get(Exception) or self.exception_handlers.get(500)
        handlers = {key: value for key, value in self.exception_handlers.items() if key not in (500, Exception)}
        app: ASGIApp = ExceptionMiddleware(_answering(route), handlers=handlers, debug=self.debug)
        for middleware in reversed(self.user_middleware):
            if middleware.cls not in LEFT_OUT:
                cls: Any = middleware.cls
                app = cls(app, *middleware.args, **middleware.kwargs)
        return ServerErrorMiddleware(app, handler=unforeseen, debug=self.debug)


def _answering(route: APIRoute) -> ASGIApp:
    endpoint: Endpoint = route.endpoint

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = route  # the access log's and the metrics' route template
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app
