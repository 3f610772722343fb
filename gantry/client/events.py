"""``gantry events tail``: the gateway's recent events, then (``--follow``) its live stream of
server-sent events, one line per event (or one JSON object per line)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from gantry.client.api import Api

SUMMARY_FIELDS = 5
# said by the subject already, or ids no one reads in a terminal
UNSHOWN = frozenset({"service_id", "project", "service", "scm_project_id", "delivery_id", "namespace"})
Envelope = dict[str, Any]


def event_line(envelope: Envelope) -> str:
    """``12:00:03.123  deploy.status  <subject>  cid=1a2b3c4d  state=succeeded version=1.0.2 …``"""
    when = str(envelope.get("time", ""))[11:23] or "-"
    data = envelope.get("data") or {}
    scalars = [(k, v) for k, v in data.items() if k not in UNSHOWN and isinstance(v, str | int | float | bool)]
    fields = " ".join(f"{key}={value}" for key, value in scalars[:SUMMARY_FIELDS])
    correlation = str(envelope.get("correlation_id", ""))[:8]
    return f"{when}  {envelope.get('type', '?')}  {envelope.get('subject', '-')}  cid={correlation}  {fields}".rstrip()


def frames(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Server-sent events as (event name, data): ``data:`` lines joined, comments skipped."""
    name, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


def write(envelope: Envelope, fmt: str, out: TextIO) -> None:
    text = json.dumps(envelope, ensure_ascii=False) if fmt == "json" else event_line(envelope)
    print(text, file=out, flush=True)


def tail(api: Api, topics: list[str], limit: int, follow: bool, fmt: str, out: TextIO | None = None) -> None:
    """The recent events; with ``follow``, the stream is opened first (its first frame says the
    gateway has subscribed it), so no event falls between the recent ones and the live ones."""
    out = out or sys.stdout
    params: dict[str, Any] = {"topic": topics} if topics else {}
    if not follow:
        _recent(api, params, limit, fmt, out)
        return
    with api.stream("/api/gateway/events", params) as answer:
        lines = answer.iter_lines()
        for line in lines:  # "retry: …" and ": connected …", then a blank line: subscribed
            if not line:
                break
        seen = _recent(api, params, limit, fmt, out)
        for name, data in frames(lines):
            if name == "lagged":
                dropped = json.loads(data).get("dropped")
                print(f"gantry: {dropped} events dropped: this stream was read slower than they came", file=sys.stderr)
                continue
            envelope = json.loads(data)
            if envelope.get("id") not in seen:  # already shown among the recent ones
                write(envelope, fmt, out)


def _recent(api: Api, params: dict[str, Any], limit: int, fmt: str, out: TextIO) -> set[str]:
    recent = api.call("GET", "/api/gateway/events/recent", params=params | {"limit": limit})
    for item in recent:
        write(item["event"], fmt, out)
    return {str(item["event"].get("id")) for item in recent}
