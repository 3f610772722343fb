"""Small request shapes shared by several services."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, StrictBool
from sqlmodel._compat import SQLModelConfig


class Toggle(BaseModel):
    enabled: StrictBool


# A request body's config: a misspelt or unknown field is refused (422 naming it), never ignored
# (`{"replica": 5}` once deployed the default 3). SQLModel types its models' config as its own
# TypedDict, which it does not re-export: this is the one place that reaches for it.
REFUSE_UNKNOWN_FIELDS = SQLModelConfig(extra="forbid")


def _not_a_number(value: object) -> object:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("give an ISO 8601 date-time (e.g. 2026-01-31T12:00:00Z), not a number")
    return value


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
# A date-time as the document says it (format: date-time): ISO 8601, never a bare number, which
# pydantic would otherwise read as seconds since 1970
IsoDateTime = Annotated[datetime, BeforeValidator(_not_a_number)]


def documented(
    pattern: re.Pattern[str] | Callable[[], str] | str | None = None,
    *,
    max_length: int | None = None,
    min_length: int | None = None,
    nullable: bool = True,
    **more: Any,
) -> dict[str, Any]:
    """``schema_extra`` of a field whose rule a domain function enforces, with its own message: the
    OpenAPI document states the same rule, so a client (or a generator of tests) knows it before it
    sends. ``pattern`` may be built when the document is (a callable), from the domain's own test."""

    def extra(schema: dict[str, Any]) -> None:
        if not nullable:  # optional (left out: unchanged), but never null
            kept = [branch for branch in schema.pop("anyOf", []) if branch.get("type") != "null"]
            schema.update(kept[0] if len(kept) == 1 else {"anyOf": kept} if kept else {})
        if pattern is not None:
            schema["pattern"] = (
                pattern.pattern if isinstance(pattern, re.Pattern) else (pattern() if callable(pattern) else pattern)
            )
        if max_length is not None:
            schema["maxLength"] = max_length
        if min_length is not None:
            schema["minLength"] = min_length
        schema.update(more)  # other JSON Schema keywords as they are: enum, maxItems, items

    return {"json_schema_extra": extra}


def char_class_of(refused: Callable[[str], bool]) -> str:
    """The inside of a regex character class (``[...]``) of every character ``refused`` refuses."""
    ranges: list[tuple[int, int]] = []
    for code in range(sys.maxunicode + 1):
        if refused(chr(code)):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    parts = (_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in ranges)
    return "".join(parts)


@lru_cache(maxsize=1)
def spaces() -> str:
    """Every character ``str.isspace`` (so ``str.strip``) takes for a space, as a class's inside:
    more than the regex ``\\s`` matches (the separators \\x1c-\\x1f are spaces too)."""
    return char_class_of(str.isspace)


def not_blank() -> str:
    """A text with something besides spaces in it (what a ``strip()``-ed check takes)."""
    return f"[^{spaces()}]"


def _escape(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
