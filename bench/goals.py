"""The throughput goals Gantry works towards on a 2-core machine, printed beside a run's figures.

Each benchmark hands the figures it measured to :func:`goal_table`, which prints, per goal: the
target, where Gantry stood when the goals were set (the figures the goals were written against:
embedded defaults, 10 services, hooks through the gateway), what this run measured, and whether it
meets the target. A goal whose figure this run did not measure (another benchmark, another stack)
is left out rather than shown as met or missed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from bench.measures import FLAT_PERCENT, table


@dataclass(frozen=True)
class Goal:
    key: str
    what: str
    target: float
    at_most: bool  # True: lower is better (latency, CPU); False: higher is better (throughput)
    unit: str
    when_set: str  # where Gantry stood when the goal was set

    def met(self, measured: float) -> bool:
        return measured <= self.target if self.at_most else measured >= self.target

    def target_text(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.target:g} {self.unit}"


GOALS = (
    Goal("chains_per_s", "chains/s sustained, nothing lost (embedded)", 300, False, "/s", "30–40/s"),
    Goal("chains_per_s_kafka", "chains/s sustained, nothing lost (Apache Kafka + PostgreSQL)", 200, False, "/s", "-"),
    Goal("p99_at_100_ms", "p99 hook → deploy.status at 100 chains/s (embedded)", 250, True, "ms", "21,500 ms"),
    Goal("p99_at_100_ms_kafka", "p99 at 100 chains/s (Apache Kafka + PostgreSQL)", 250, True, "ms", "-"),
    Goal("cpu_ms_per_chain", "CPU per chain, all processes", 6, True, "ms", "50–80 ms"),
    Goal("idle_percent", "idle CPU, all of Gantry", 5, True, "% of a core", "about 50 %"),
    Goal("hop_p50_ms", "a hop at low load, p50, while idle stays low (embedded)", 20, True, "ms", "16–20 ms"),
    Goal("ingress_per_s", "webhook ingress through the gateway, 64 connections", 1500, False, "/s", "145/s"),
    Goal("ingress_p99_ms", "its p99 at 64 connections", 50, True, "ms", "1,600 ms"),
    Goal("soak_growth_percent", "RSS growth after warm-up, worst service, 10-min soak", FLAT_PERCENT, True, "%", "-"),
    Goal("soak_wrong", "chains lost, late or duplicated (or hooks refused), that soak", 0, True, "chains", "-"),
)
SOAK_MINUTES = 10.0  # the soak the memory goals are about


def goal_table(measured: Mapping[str, float]) -> str:
    """The goals this run measured a figure for, each with the run's figure and whether it is met."""
    rows = []
    for goal in GOALS:
        figure = measured.get(goal.key)
        if figure is None or math.isnan(figure):
            continue
        rows.append(
            (
                goal.what,
                goal.target_text(),
                goal.when_set,
                f"{figure:,.1f} {goal.unit}",
                "yes" if goal.met(figure) else "no",
            )
        )
    return table(("goal", "target", "when set", "this run", "met"), rows)


@dataclass(frozen=True)
class RateFigures:
    """What one offered rate of a chain benchmark came to."""

    rate: float  # hooks/s offered
    offered: int
    accepted: int
    completed: int
    wrong: int  # lost + late + duplicated
    chains_per_s: float
    p99_ms: float
    cpu_ms_per_chain: float


def clean(figures: RateFigures) -> bool:
    """Every hook offered was accepted and its chain completed once, none lost, late or doubled."""
    return figures.wrong == 0 and figures.offered == figures.accepted == figures.completed > 0


def chain_goals(rates: list[RateFigures], idle_percent: float, *, suffix: str = "") -> dict[str, float]:
    """The chain benchmark's figures for the goals: the highest clean rate's chains/s and its CPU
    per chain (the highest rate's if none is clean), p99 at 100 hooks/s, the idle CPU. ``suffix``
    ``"_kafka"``: the run was on Apache Kafka + PostgreSQL, whose goals are throughput and p99 only."""
    sustained = [r for r in rates if clean(r)]
    best = max(sustained, key=lambda r: r.rate) if sustained else max(rates, key=lambda r: r.rate, default=None)
    at_100 = [r.p99_ms for r in rates if r.rate == 100]
    figures = {
        f"chains_per_s{suffix}": max(r.chains_per_s for r in sustained) if sustained else math.nan,
        f"p99_at_100_ms{suffix}": at_100[0] if at_100 else math.nan,
    }
    if not suffix:  # the CPU and idle goals are the embedded defaults'
        figures["cpu_ms_per_chain"] = best.cpu_ms_per_chain if best else math.nan
        figures["idle_percent"] = idle_percent
    return figures


def soak_goals(growth_percent: float, wrong: int, minutes: float) -> dict[str, float]:
    """The memory soak's figures for the goals: the worst service's growth after the warm-up, and
    the hooks refused plus the chains lost, late or duplicated. None for a soak shorter than
    ``SOAK_MINUTES``: a slow leak barely shows in a short one, so the goal would read as met
    without having been measured."""
    if minutes < SOAK_MINUTES:
        return {}
    return {"soak_growth_percent": growth_percent, "soak_wrong": float(wrong)}
