"""The benchmarks' arithmetic, kept apart from the processes they drive so tests can check it.

Open-loop send times, percentiles, CPU time from ``/proc/<pid>/stat``, mean hops from the services'
``/metrics``, memory growth over a soak and the tables printed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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


def _stat_fields(stat: str) -> list[str]:
    """The fields of a ``/proc/<pid>/stat`` line from field 3 (state) on.

    The command name (field 2) is in parentheses and may hold spaces or parentheses itself, so the
    fields are counted after its last ``)``."""
    closing = stat.rfind(")")
    if closing < 0:
        raise ValueError(f"not a /proc/<pid>/stat line: {stat[:80]!r}")
    return stat[closing + 2 :].split()


def cpu_seconds_of_stat(stat: str, ticks_per_second: int = CLOCK_TICKS) -> float:
    """User + system CPU seconds of a process, from the text of its ``/proc/<pid>/stat``:
    utime and stime are fields 14 and 15 of the line."""
    fields = _stat_fields(stat)
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (0 once it is gone)."""
    try:
        return cpu_seconds_of_stat(Path(f"/proc/{pid}/stat").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def tree_cpu_seconds(pid: int, ticks_per_second: int = CLOCK_TICKS) -> float:
    """User + system CPU seconds of a process and everything it started: its own, its children's
    that it has waited for (fields 16 and 17 of its stat line), and each live child's tree (from
    ``/proc/<pid>/task/<pid>/children``). PostgreSQL's server is a tree: a process per
    connection under the postmaster. 0 once the process is gone; its own alone on a kernel that
    does not list children."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        children = []  # gone meanwhile, or a kernel without CONFIG_PROC_CHILDREN
    fields = _stat_fields(stat)
    own_and_waited = sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
    return own_and_waited / ticks_per_second + sum(tree_cpu_seconds(int(child), ticks_per_second) for child in children)


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """Each process's CPU seconds so far, with what it started (``tree_cpu_seconds``)."""
    return {name: tree_cpu_seconds(pid) for name, pid in pids.items()}


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process used between two snapshots."""
    return {name: after.get(name, 0.0) - used for name, used in before.items()}


HistogramTotals = dict[str, tuple[float, float]]  # label value (a topic, say): (sum, count)


def histogram_totals(
    exposition: str, metric: str = "gantry_event_hop_seconds", label: str = "topic"
) -> HistogramTotals:
    """A histogram's ``_sum`` and ``_count`` per value of ``label`` (the topic), from a Prometheus
    text exposition. ``label`` may name several labels, comma-separated (``"topic,way"``): the key
    is then their values joined by ", "; with ``label=""`` the histogram's totals over all its
    labels (or of a histogram without any) are under the key ``""``."""
    names = [name for name in label.split(",") if name]
    totals: dict[str, list[float]] = {}
    for line in exposition.splitlines():
        for slot, suffix in enumerate(("_sum", "_count")):
            head = metric + suffix
            if not line.startswith(head) or line[len(head) : len(head) + 1] not in ("{", " "):
                continue
            labels, _, value = line[len(head) :].rpartition(" ")
            parts = labels.strip("{}").split(",")
            key = ", ".join(
                next((part[len(name) + 2 : -1] for part in parts if part.startswith(f'{name}="')), "") for name in names
            )
            totals.setdefault(key, [0.0, 0.0])[slot] += float(value)
    return {key: (summed, counted) for key, (summed, counted) in totals.items()}


def observations_over(exposition: str, metric: str, bound: str) -> float:
    """How many observations of a histogram (all its labels together) were above ``bound``, one of
    its buckets' ``le`` as written in the exposition (``"0.05"``)."""
    counted = within = 0.0
    for line in exposition.splitlines():
        if line.startswith(metric + "_count{"):
            counted += float(line.rpartition(" ")[2])
        elif line.startswith(metric + "_bucket{") and f'le="{bound}"' in line:
            within += float(line.rpartition(" ")[2])
    return counted - within


def mean_hops(before: HistogramTotals, after: HistogramTotals) -> dict[str, float]:
    """Each topic's mean hop, in seconds, over the events handled between two ``histogram_totals``."""
    means = {}
    for topic, (summed, counted) in after.items():
        was_summed, was_counted = before.get(topic, (0.0, 0.0))
        if counted > was_counted:
            means[topic] = (summed - was_summed) / (counted - was_counted)
    return means


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


WARM_UP_SHARE = 0.2  # of the soak: imports, caches, connection pools and allocator arenas settle
WARM_UP_LONGEST = 120.0  # seconds: a long soak's warm-up is no longer than this
FLAT_PERCENT = 5.0  # the most a process may grow after its warm-up and still count as flat


@dataclass(frozen=True)
class Growth:
    """How much one process's resident memory grew after the soak's warm-up (NaN: too few samples)."""

    level_mb: float  # fitted RSS when the first sample after the warm-up was taken
    growth_mb: float  # fitted growth from that sample to the last
    samples: int  # samples after the warm-up

    @property
    def percent(self) -> float:
        """The growth in % of the level it grew from."""
        return 100 * self.growth_mb / self.level_mb if self.level_mb > 0 else math.nan


def warm_up_seconds(soak_seconds: float) -> float:
    """The start of a soak left out of its growth: its first 20 %, or 2 minutes, whichever is shorter."""
    return min(WARM_UP_SHARE * soak_seconds, WARM_UP_LONGEST)


def memory_growth(samples: Sequence[tuple[float, float]]) -> Growth:
    """The growth of one process's RSS after the warm-up, from its (seconds into the soak, MB) samples.

    The samples after the warm-up get a least-squares line; the growth is its rise from the first of
    them to the last, and the level is the line's value at the first. A line, not the last sample
    minus the first, because RSS moves by a few MB either way as the allocator hands pages back or a
    cache fills: one such step at either end would read as growth or shrinkage, where the line's
    slope only follows what persists across all the samples. The goal (``FLAT_PERCENT``, 5 % over
    a 10-minute soak) sits above that settling (at about 100 MB per service, 1–3 MB) and below the
    leaks met so far: deploy reading every past deployment per event grew 11 % in 5 minutes at 5
    hooks/s. At that rate it catches a leak of about 2 KB per chain (5 MB over 8 minutes' 2,400
    chains); a slower one needs a longer soak or a higher rate."""
    if not samples:
        return Growth(math.nan, math.nan, 0)
    after = [(t, mb) for t, mb in samples if t >= warm_up_seconds(max(t for t, _ in samples))]
    if len(after) < 2:
        return Growth(math.nan, math.nan, len(after))
    slope, intercept = _least_squares(after)
    start, end = after[0][0], after[-1][0]
    return Growth(intercept + slope * start, slope * (end - start), len(after))


def _least_squares(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Slope and intercept of the least-squares line through ``points`` (flat if all share one x)."""
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0, mean_y
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return slope, mean_y - slope * mean_x


def worst_growth(growths: Mapping[str, Growth], counted: Iterable[str]) -> float:
    """The run's figure: the largest growth in % among the ``counted`` processes (NaN: none measured)."""
    figures = [growths[name].percent for name in counted if name in growths]
    known = [figure for figure in figures if not math.isnan(figure)]
    return max(known) if known else math.nan
