"""Paged lists, as GitLab and GitHub page theirs: ``limit`` and an opaque ``cursor`` in, an
array out, and the next page's address in a ``Link: <…>; rel="next"`` header.

The cursor is the sort key of the last item served (keyset paging), so a page never repeats or
skips an item when rows are added before it. ``q`` filters where names are searched.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request, Response

from shared.errors import BadRequest

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
SortKey = tuple[Any, ...]


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    after: SortKey | None = None  # the sort key of the last item of the page before

    def window(self, items: Sequence[T], key: Callable[[T], SortKey]) -> tuple[list[T], str | None]:
        """This page of ``items`` (already ordered by ``key``) and the cursor of the next, if any."""
        start = 0
        if self.after is not None:
            after = list(self.after)
            start = next((i for i, item in enumerate(items) if list(key(item)) > after), len(items))
        page = list(items[start : start + self.limit])
        more = start + self.limit < len(items)
        return page, (encode_cursor(key(page[-1])) if more and page else None)


def encode_cursor(key: SortKey) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> SortKey:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(
            f"the cursor {cursor[:40]!r} is not one Gantry gave: "
            "take it from the Link header, or start again without it"
        ) from exc
    if not isinstance(key, list):
        raise BadRequest(f"the cursor {cursor[:40]!r} is not one Gantry gave: start again without it")
    return tuple(key)


def page_request(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="how many items at most")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=1024, description="where the page starts: from the previous page's Link header")
    ] = None,
) -> PageRequest:
    return PageRequest(limit=limit, after=decode_cursor(cursor) if cursor else None)


PageDep = Annotated[PageRequest, Depends(page_request)]
SearchQuery = Annotated[str | None, Query(max_length=128, description="keep the items whose names contain this")]


def link_next(request: Request, response: Response, cursor: str | None) -> None:
    """Point at the next page (``Link: <url>; rel="next"``) when there is one."""
    if cursor is not None:
        url = request.url.include_query_params(cursor=cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'


def serve_page(
    items: Sequence[T], key: Callable[[T], SortKey], page: PageRequest, request: Request, response: Response
) -> list[T]:
    """The common case: order ``items`` by ``key``, serve this page, link the next."""
    ordered = sorted(items, key=key)
    served, cursor = page.window(ordered, key)
    link_next(request, response, cursor)
    return served


class Pages:
    """A list endpoint's paging: this request's limit and cursor, and the Link to the next page
    in its answer. Ask for it as ``pages: PagesDep``."""

    def __init__(self, page: PageRequest, request: Request, response: Response) -> None:
        self.page, self._request, self._response = page, request, response

    @property
    def limit(self) -> int:
        return self.page.limit

    @property
    def after(self) -> SortKey | None:
        return self.page.after

    def serve(self, items: Sequence[T], key: Callable[[T], SortKey]) -> list[T]:
        """This page of ``items``, ordered by ``key``; the next page linked when there is one."""
        return serve_page(items, key, self.page, self._request, self._response)

    def served(self, rows: Sequence[T], key: Callable[[T], SortKey]) -> list[T]:
        """This page of ``rows`` a query already ordered, started after the cursor and limited to
        ``limit + 1`` (the one more tells that a next page exists); the next page linked."""
        served = list(rows[: self.limit])
        more = len(rows) > self.limit and served
        link_next(self._request, self._response, encode_cursor(key(served[-1])) if more else None)
        return served


def pages(page: PageDep, request: Request, response: Response) -> Pages:
    return Pages(page, request, response)


PagesDep = Annotated[Pages, Depends(pages)]


def matches(q: str | None, *names: str | None) -> bool:
    """Whether any of ``names`` contains ``q`` (case-insensitive); no ``q`` matches everything."""
    if not q:
        return True
    needle = q.casefold()
    return any(needle in name.casefold() for name in names if name)
