"""The gateway, as the client commands see it: one httpx client with the kept token, errors
turned into exit codes with the address they concern, and lists followed page by page."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from gantry.client.config import Login
from gantry.client.errors import NOT_LOGGED_IN, REFUSED, UNREACHABLE, CliError

PAGE_SIZE = 500  # the most a list gives at once


def user_agent() -> str:
    return f"gantry-cli/{version('gantry')}"


class Api:
    def __init__(self, login: Login, *, timeout: float = 30, transport: httpx.BaseTransport | None = None) -> None:
        self.gateway = login.gateway.rstrip("/")
        headers = {"Authorization": f"Bearer {login.token}", "User-Agent": user_agent()}
        self._client = httpx.Client(base_url=self.gateway, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON (None for an empty answer); an error answer raises CliError."""
        answer = self.send(method, path, **kwargs)
        return answer.json() if answer.content else None

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            answer = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.gateway, exc) from exc
        check(answer, self.gateway)
        return answer

    def pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a list, following its ``Link: <…>; rel="next"`` pages."""
        query = {"limit": PAGE_SIZE, **(params or {})}
        while True:
            answer = self.send("GET", path, params=query)
            yield from answer.json()
            following = answer.links.get("next", {}).get("url")
            if not following:
                return
            # the link's query only: the service behind the gateway may name its own address
            query = {**query, **dict(parse_qsl(urlsplit(following).query))}

    @contextmanager
    def stream(self, path: str, params: dict[str, Any] | None = None) -> Iterator[httpx.Response]:
        """A long answer read as it comes (server-sent events): no read timeout."""
        try:
            with self._client.stream("GET", path, params=params, timeout=httpx.Timeout(30, read=None)) as answer:
                if answer.is_error:
                    answer.read()
                check(answer, self.gateway)
                yield answer
        except httpx.TransportError as exc:
            raise unreachable(self.gateway, exc) from exc


def unreachable(gateway: str, exc: httpx.TransportError) -> CliError:
    return CliError(
        UNREACHABLE, f"cannot reach the gateway at {gateway} ({reason(exc)}): is Gantry running? `gantry up`"
    )


def reason(exc: httpx.TransportError) -> str:
    """Why a request got no answer, in a few words."""
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    return "connection refused" if "Connection refused" in text else (text or type(exc).__name__)


def check(answer: httpx.Response, gateway: str) -> None:
    if answer.status_code == 401:
        raise CliError(
            NOT_LOGGED_IN,
            f"the gateway at {gateway} refused the token ({detail(answer)}): "
            f"log in again with `gantry login --gateway {gateway} --token TOKEN`",
        )
    if answer.is_error:
        request = answer.request
        raise CliError(REFUSED, f"{answer.status_code} {request.method} {request.url.path}: {detail(answer)}")


def detail(answer: httpx.Response) -> str:
    """What the API said was wrong: ``detail`` (a string, or a list of problems), else the body."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:300] or answer.reason_phrase
    found = body.get("detail", body.get("title")) if isinstance(body, dict) else body
    if isinstance(found, list):
        return "; ".join(_problem(item) for item in found)
    return str(found) if found is not None else answer.text[:300]


def _problem(item: Any) -> str:
    if isinstance(item, dict) and "msg" in item:
        where = ".".join(str(part) for part in item.get("loc", ()))
        return f"{where}: {item['msg']}" if where else str(item["msg"])
    return str(item)
