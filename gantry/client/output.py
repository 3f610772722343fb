"""Lists as a person reads them (aligned columns, like kubectl) or as a script does (JSON, YAML)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import yaml

FORMATS = ("table", "json", "yaml")
WIDEST = 60  # a cell longer than this is cut, with an ellipsis

Getter = Callable[[dict[str, Any]], Any]
Column = tuple[str, str | Getter]  # a header, and a dotted key (``stable.version``) or a function


def dump(value: Any, fmt: str) -> str:
    """The API's own JSON, unchanged, as JSON or YAML."""
    if fmt == "yaml":
        return yaml.safe_dump(json.loads(json.dumps(value, default=str)), sort_keys=False, allow_unicode=True)
    return json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """One line per row under upper-case headers, each column as wide as its widest cell."""
    cells = [[header.upper() for header, _ in columns]]
    cells += [[cell(pick(row, getter)) for _, getter in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["   ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip() for line in cells]
    return "\n".join(lines) + "\n"


def pick(row: dict[str, Any], getter: str | Getter) -> Any:
    if callable(getter):
        return getter(row)
    value: Any = row
    for part in getter.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def cell(value: Any) -> str:
    """A value as one short cell: ``-`` for nothing, lists joined, times to the second in UTC."""
    if value is None or value == "" or value == [] or value == {}:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list):
        text = ",".join(cell(item) for item in value)
    elif isinstance(value, dict):
        text = ",".join(f"{key}={cell(item)}" for key, item in value.items())
    elif isinstance(value, str) and _is_time(value):
        text = value[:19].replace("T", " ")
    else:
        text = " ".join(str(value).split())  # one line
    return text if len(text) <= WIDEST else text[: WIDEST - 1] + "…"


def _is_time(text: str) -> bool:
    """An ISO 8601 time as the API gives them (``2024-05-01T12:00:03.123456Z``)."""
    return len(text) >= 19 and text[4] == "-" and text[7] == "-" and text[10] == "T" and text[13] == ":"
