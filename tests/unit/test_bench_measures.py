"""The benchmarks' arithmetic: open-loop send times, percentiles, /proc CPU, tallies and tables."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.chain_load import RELAY, batch_sizes
from bench.goals import RateFigures, chain_goals, goal_table, soak_goals
from bench.ingress import gc_pauses
from bench.measures import (
    Growth,
    cpu_seconds,
    cpu_seconds_of_stat,
    cpu_snapshot,
    cpu_used,
    histogram_totals,
    mean_hops,
    memory_growth,
    observations_over,
    percentile,
    send_times,
    table,
    tally,
    tree_cpu_seconds,
    warm_up_seconds,
    worst_growth,
)
from bench.wrk import parse_wrk_output, run_wrk
from shared import gitlab_hook

# /proc/<pid>/stat of a process whose name holds a space and a parenthesis: utime 250, stime 50
STAT = "4242 (python (x) 3) S 1 4242 4242 0 -1 4194560 9000 0 0 0 250 50 0 0 20 0 12 0 7000 123456 789"


def test_send_times_are_fixed_in_advance_at_the_rate() -> None:
    times = send_times(50, 2)
    assert len(times) == 100
    assert times[0] == 0
    assert times[1] == pytest.approx(0.02)
    assert times[-1] == pytest.approx(1.98)
    assert all(later > earlier for earlier, later in zip(times, times[1:], strict=False))


def test_send_times_of_a_fractional_rate_and_refusals() -> None:
    assert send_times(2.5, 2) == [0.0, 0.4, 0.8, 1.2, 1.6]
    with pytest.raises(ValueError, match="positive"):
        send_times(0, 10)
    with pytest.raises(ValueError, match="positive"):
        send_times(10, -1)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100 … 1, unsorted on purpose
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError, match="fraction"):
        percentile(values, 0)


def test_cpu_seconds_read_after_the_command_name() -> None:
    assert cpu_seconds_of_stat(STAT, ticks_per_second=100) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="stat"):
        cpu_seconds_of_stat("garbage", ticks_per_second=100)


def test_cpu_of_this_process_and_of_a_gone_one() -> None:
    assert cpu_seconds(os.getpid()) > 0  # this test run has used some CPU by now
    assert cpu_seconds(2**22 + 12345) == 0.0  # above pid_max's default: no such process
    assert cpu_used({"a": 1.0, "b": 2.0}, {"a": 1.5, "b": 2.0}) == {"a": 0.5, "b": 0.0}


def test_tally_counts_latency_lost_and_duplicated() -> None:
    sent = {"h1": 10.0, "h2": 11.0, "h3": 12.0, "h4": 13.0}
    accepted = {"h1", "h2", "h3"}  # h4 was refused: neither lost nor measured
    completions = [
        ("h1", "e1", 10.1),
        ("h1", "e1", 10.5),  # the same event read twice: a redelivery, not a duplicate
        ("h2", "e2", 11.3),
        ("h2", "e9", 11.4),  # a second, distinct deploy.status for h2: duplicated
        ("h4", "e4", 13.2),
        ("other", "e5", 9.0),  # not a hook of this run
    ]
    latencies, lost, duplicated = tally(sent, accepted, completions)
    assert sorted(latencies) == [pytest.approx(0.1), pytest.approx(0.3)]
    assert lost == 1  # h3
    assert duplicated == 1


def test_table_aligns_columns_and_prints_missing_as_dash() -> None:
    text = table(("rate", "p99 ms"), [(20, 12.345), (100, math.nan)])
    assert text.splitlines() == [
        "| rate | p99 ms |",
        "|-----:|-------:|",
        "|   20 |   12.3 |",
        "|  100 |      - |",
    ]


def test_wrk_figures_come_from_the_scripts_line() -> None:
    output = (
        "Running 10s test @ http://127.0.0.1:1/webhooks/gitlab\n"
        'WRK {"requests":15000,"duration_us":10000000,"not_2xx":1000,"socket_errors":2,'
        '"p50_us":4100,"p90_us":9000,"p99_us":31500,"max_us":80000}\n'
    )
    result = parse_wrk_output(output)
    assert result.accepted_per_second == 1400
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (4.1, 31.5, 80.0)
    assert result.socket_errors == 2
    with pytest.raises(ValueError, match="no WRK line"):
        parse_wrk_output("Running 10s test\n")


class Recorder(BaseHTTPRequestHandler):
    bodies: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append((dict(self.headers), body))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_wrk_script_posts_signed_pipeline_hooks_each_with_a_new_pipeline() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/webhooks/gitlab"
        result = run_wrk(url, connections=2, seconds=1, script_args=["tok", "local-abc", "shop/web", "500"])
    finally:
        server.shutdown()
    received = len(Recorder.bodies)
    # wrk counts the answers it read; when its time is up, each connection may have one more sent
    assert 0 < result.requests <= received <= result.requests + 2, (result.requests, received)
    assert result.not_2xx == 0
    hooks = [gitlab_hook.parse_pipeline_hook(json.loads(body)) for _, body in Recorder.bodies]
    ids = [hook.object_attributes.id for hook in hooks]
    assert len(set(ids)) == len(ids)  # never the same pipeline twice, across wrk's threads too
    assert {hook.scm_project_id for hook in hooks} == {"local-abc"}
    assert {hook.project.path_with_namespace for hook in hooks} == {"shop/web"}
    assert {headers["X-Gitlab-Token"] for headers, _ in Recorder.bodies} == {"tok"}
    assert {headers["X-Gitlab-Event"] for headers, _ in Recorder.bodies} == {"Pipeline Hook"}


def figures(rate: float, *, accepted: int | None = None, wrong: int = 0, p99: float = 100.0) -> RateFigures:
    offered = int(rate * 10)
    taken = offered if accepted is None else accepted
    return RateFigures(rate, offered, taken, taken - wrong, wrong, rate * 0.99, p99, 40.0 / rate)


def test_the_sustained_rate_is_the_highest_at_which_every_chain_completed_once() -> None:
    runs = [figures(100, p99=180.0), figures(200), figures(300, wrong=3), figures(400, accepted=3000)]
    goals = chain_goals(runs, idle_percent=7.5)
    assert goals["chains_per_s"] == pytest.approx(198), "300 lost chains and 400 refused hooks: 200 is the last clean"
    assert goals["cpu_ms_per_chain"] == pytest.approx(0.2), "the CPU per chain of that same rate"
    assert goals["p99_at_100_ms"] == 180.0 and goals["idle_percent"] == 7.5
    none_clean = chain_goals([figures(50, wrong=1)], idle_percent=1.0, suffix="_kafka")
    assert math.isnan(none_clean["chains_per_s_kafka"]) and set(none_clean) == {
        "chains_per_s_kafka",
        "p99_at_100_ms_kafka",
    }


def test_the_goal_table_says_which_goals_are_met_and_leaves_out_what_was_not_measured() -> None:
    printed = goal_table({"chains_per_s": 320.0, "p99_at_100_ms": 900.0, "idle_percent": math.nan})
    lines = {line.split("|")[1].strip(): line for line in printed.splitlines()[2:]}
    assert lines.keys() == {
        "chains/s sustained, nothing lost (embedded)",
        "p99 hook → deploy.status at 100 chains/s (embedded)",
    }
    assert lines["chains/s sustained, nothing lost (embedded)"].rstrip(" |").endswith("yes")
    assert lines["p99 hook → deploy.status at 100 chains/s (embedded)"].rstrip(" |").endswith("no")
    assert "≤ 250 ms" in printed and "30–40/s" in printed


def test_the_warm_up_is_a_fifth_of_the_soak_or_two_minutes_whichever_is_shorter() -> None:
    assert warm_up_seconds(60) == pytest.approx(12)
    assert warm_up_seconds(600) == pytest.approx(120)
    assert warm_up_seconds(3600) == 120


def test_memory_growth_leaves_out_the_warm_up_and_follows_the_trend_not_one_sample() -> None:
    # a 10-minute soak sampled every 30 s: 100 MB climbing to 130 MB in the warm-up (the first 2 min,
    # left out), then rising 0.1 MB per sample (1.6 MB in all), with a 4 MB spike half-way (a
    # cache filled and emptied) and a last sample 2 MB down (pages handed back)
    samples = [(float(t), 100 + t / 4) for t in range(0, 120, 30)]
    samples += [(float(t), 130 + 0.1 * (t - 120) / 30 + (4 if t == 360 else 0)) for t in range(120, 600, 30)]
    samples += [(600.0, 130 + 1.6 - 2)]
    growth = memory_growth(samples)
    assert growth.samples == 17  # 120 s … 600 s
    assert 0.8 < growth.growth_mb < 1.6, "the trend's rise, where the last sample minus the first is -0.4 MB"
    assert growth.level_mb == pytest.approx(130, abs=0.5)
    assert growth.percent == pytest.approx(100 * growth.growth_mb / growth.level_mb)


def test_a_steady_leak_grows_in_proportion_and_a_flat_process_not_at_all() -> None:
    leak = memory_growth([(float(t), 100 + t / 60) for t in range(0, 601, 30)])  # 1 MB a minute
    assert leak.growth_mb == pytest.approx(8.0) and leak.percent == pytest.approx(8 / 102 * 100)
    flat = memory_growth([(float(t), 100.0) for t in range(0, 601, 30)])
    assert flat.growth_mb == 0 and flat.percent == 0


def test_memory_growth_of_too_few_samples_is_unknown() -> None:
    assert math.isnan(memory_growth([]).growth_mb)
    one_after = memory_growth([(0.0, 100.0), (60.0, 101.0)])  # warm-up 12 s: only the second is after
    assert one_after.samples == 1 and math.isnan(one_after.percent)


def test_the_runs_figure_is_the_worst_counted_process() -> None:
    growths = {
        "deploy": Growth(110.0, 3.3, 16),
        "gateway": Growth(100.0, 1.0, 16),
        "release": Growth(math.nan, math.nan, 1),
        "broker": Growth(50.0, 40.0, 16),  # grows by design: not counted
    }
    assert worst_growth(growths, ("gateway", "deploy", "release", "catalog")) == pytest.approx(3.0)
    assert math.isnan(worst_growth({"release": Growth(math.nan, math.nan, 0)}, ("release",)))


def test_the_soak_goals_are_compared_only_for_a_soak_of_ten_minutes_or_more() -> None:
    assert soak_goals(2.0, 0, minutes=1) == {}
    figures = soak_goals(7.5, 2, minutes=10)
    assert figures == {"soak_growth_percent": 7.5, "soak_wrong": 2.0}
    printed = goal_table(figures)
    rows = [line.split("|") for line in printed.splitlines()[2:]]
    assert [(row[2].strip(), row[5].strip()) for row in rows] == [("≤ 5 %", "no"), ("≤ 0 chains", "no")]
    assert all(
        row[-2].strip() == "yes" for row in (r.split("|") for r in goal_table(soak_goals(4.9, 0, 10)).splitlines()[2:])
    )


def test_mean_hops_come_from_the_histograms_sum_and_count_between_two_scrapes():
    before = histogram_totals(
        "# HELP gantry_event_hop_seconds From an event's own time…\n"
        'gantry_event_hop_seconds_bucket{le="0.1",topic="version.released"} 3.0\n'
        'gantry_event_hop_seconds_count{topic="version.released"} 4.0\n'
        'gantry_event_hop_seconds_sum{topic="version.released"} 0.5\n'
        'gantry_event_chain_seconds_sum{topic="version.released"} 99.0\n'
    )
    after = histogram_totals(
        'gantry_event_hop_seconds_count{topic="version.released"} 14.0\n'
        'gantry_event_hop_seconds_sum{topic="version.released"} 3.5\n'
        'gantry_event_hop_seconds_count{topic="deploy.requested"} 2.0\n'
        'gantry_event_hop_seconds_sum{topic="deploy.requested"} 1.0\n'
        'gantry_event_hop_seconds_count{topic="catalog.service.created"} 1.0\n'
        'gantry_event_hop_seconds_sum{topic="catalog.service.created"} 0.2\n'
    )
    assert before == {"version.released": (0.5, 4.0)}
    # ten events handled in between took 3.0 s; a topic seen for the first time counts from zero
    assert mean_hops(before, after) == {
        "version.released": pytest.approx(0.3),
        "deploy.requested": pytest.approx(0.5),
        "catalog.service.created": pytest.approx(0.2),
    }
    assert mean_hops(after, after) == {}  # nothing handled in between: no mean to show


def test_batches_per_second_and_their_mean_size_come_from_two_scrapes_by_topic_way_and_relay():
    def scrape(fetched: tuple[int, int], handed: tuple[int, int], relayed: tuple[int, int]) -> str:
        return "\n".join(
            [
                f'gantry_batch_events_count{{topic="deploy.requested",way="fetched"}} {fetched[0]}.0',
                f'gantry_batch_events_sum{{topic="deploy.requested",way="fetched"}} {fetched[1]}.0',
                f'gantry_batch_events_count{{topic="deploy.requested",way="handed on"}} {handed[0]}.0',
                f'gantry_batch_events_sum{{topic="deploy.requested",way="handed on"}} {handed[1]}.0',
                'gantry_batch_seconds_count{topic="deploy.requested",way="fetched"} 999.0',
                f"gantry_outbox_relayed_rows_count {relayed[0]}.0",
                f"gantry_outbox_relayed_rows_sum {relayed[1]}.0",
            ]
        )

    before = {"deploy": scrape((10, 10), (0, 0), (5, 50))}
    after = {"deploy": scrape((30, 90), (0, 0), (25, 450))}  # 20 batches of 4, 20 relay cycles of 20 rows
    sizes = batch_sizes(before, after, seconds=10.0)
    assert sizes == {
        ("deploy", "deploy.requested, fetched"): (2.0, 4.0),
        ("deploy", RELAY): (2.0, 20.0),
    }, "a way with no batch in between is left out; the relay has no labels"
    assert histogram_totals(after["deploy"], "gantry_batch_events") == {"deploy.requested": (90.0, 30.0)}, (
        "one label: the other's values summed"
    )


def test_the_doors_garbage_collections_between_two_scrapes_are_counted_with_the_long_ones():
    def scrape(young: tuple[int, int, float], old: tuple[int, int, float]) -> str:
        lines = []
        for generation, (within, count, seconds) in (("0", young), ("2", old)):
            lines += [
                f'gantry_gc_pause_seconds_bucket{{generation="{generation}",le="0.05"}} {within}.0',
                f'gantry_gc_pause_seconds_count{{generation="{generation}"}} {count}.0',
                f'gantry_gc_pause_seconds_sum{{generation="{generation}"}} {seconds}',
            ]
        return "\n".join(lines) + "\n"

    before = scrape((100, 100, 0.05), (1, 2, 0.3))
    after = scrape((900, 900, 0.4), (1, 5, 0.9))  # 800 short young ones, 3 long old ones
    counted, seconds, long = gc_pauses(before, after)
    assert (counted, long) == (803, 3) and seconds == pytest.approx(0.95)
    assert observations_over(after, "gantry_gc_pause_seconds", "0.05") == 4
    assert histogram_totals(after, "gantry_gc_pause_seconds", label="generation") == {
        "0": (0.4, 900.0),
        "2": (0.9, 5.0),
    }


def test_a_process_trees_cpu_counts_the_children_it_waited_for_and_those_still_running() -> None:
    """PostgreSQL serves each connection from a child of its postmaster: the benchmarks count a
    server's CPU with its children's, the ones that ended and the ones still running."""
    burn = "import time\nwhile time.process_time() < 0.35: pass\n"
    parent = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {burn!r}])\n"  # ended and waited for
        f"child = subprocess.Popen([sys.executable, '-c', {burn!r} + 'print(1, flush=True); time.sleep(60)'],"
        " stdout=subprocess.PIPE)\n"
        "child.stdout.readline()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    running_child = 0
    try:
        assert process.stdout is not None
        running_child = int(process.stdout.readline())
        own, whole = cpu_seconds(process.pid), tree_cpu_seconds(process.pid)
        assert tree_cpu_seconds(running_child) >= 0.3
        assert whole - own >= 0.6, "the child that ended and the one still running, 0.35 s each"
        assert cpu_snapshot({"server": process.pid}) == {"server": pytest.approx(whole, abs=0.05)}
    finally:
        if running_child:
            os.kill(running_child, signal.SIGKILL)
        process.kill()
        process.wait()
    assert tree_cpu_seconds(process.pid) == 0.0, "a gone process"
