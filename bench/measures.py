"""The benchmarks' arithmetic, kept apart from the processes they drive so tests can check it.

Open-loop send times, percentiles, CPU time from ``/proc/<pid>/stat`` and the tables printed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def send_times(rate: float, seconds: float) -> list[float]:
    """When each request of an open-loop run leaves, in seconds from the start: ``rate`` per
    second, evenly spaced, for ``seconds`` (the first at 0). The times are fixed beforehand, so a
    slow answer never delays the requests after it (no coordinated omission)."""
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be positive, not {rate} and {seconds}")
    count = math.floor(rate * seconds + 1e-9)
    return [index / rate for index in range(count)]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.5 for p50, 0.99 for p99); NaN for no values."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def cpu_seconds_of_stat(stat: str, ticks_per_second: int = CLOCK_TICKS) -> float:
    """User + system CPU seconds of a process, from the text of its ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may hold spaces or parentheses itself, so the
    fields are counted after its last ``)``: utime and stime are fields 14 and 15 of the line."""
    closing = stat.rfind(")")
    if closing < 0:
        raise ValueError(f"not a /proc/<pid>/stat line: {stat[:80]!r}")
    fields = stat[closing + 2 :].split()  # fields[0] is field 3 (state)
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / ticks_per_second


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (0 once it is gone)."""
    try:
        return cpu_seconds_of_stat(Path(f"/proc/{pid}/stat").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process used between two snapshots."""
    return {name: after.get(name, 0.0) - used for name, used in before.items()}


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table (readable as text too), numbers right-aligned and floats to one decimal."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)]
    lines = [
        "| " + " | ".join(header.ljust(width) for header, width in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (width + 1) + ":" for width in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.1f}"
    return str(value)


def tally(
    sent: dict[str, float], accepted: set[str], completions: Iterable[tuple[str, str, float]]
) -> tuple[list[float], int, int]:
    """What became of the chains one run started.

    ``sent`` maps each hook's correlation id to the time it was due to leave, ``accepted`` holds
    those answered 202, ``completions`` are the (correlation id, event id, time seen) of the final
    events seen. Gives the latencies (first completion minus due time) of the accepted chains that
    completed, how many accepted chains never completed (lost), and how many completed more than
    once with distinct events (duplicated; the same event id seen again is one event redelivered)."""
    first: dict[str, float] = {}
    events: dict[str, set[str]] = {}
    for correlation_id, event_id, seen in completions:
        if correlation_id not in accepted:
            continue
        first[correlation_id] = min(seen, first.get(correlation_id, seen))
        events.setdefault(correlation_id, set()).add(event_id)
    latencies = [first[cid] - sent[cid] for cid in accepted if cid in first]
    lost = sum(1 for cid in accepted if cid not in first)
    duplicated = sum(1 for ids in events.values() if len(ids) > 1)
    return latencies, lost, duplicated
