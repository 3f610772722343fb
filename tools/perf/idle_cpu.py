"""Idle CPU of `gantry up`: CPU-seconds (utime + stime from /proc) of every process it started.

    python tools/perf/idle_cpu.py [SECONDS]      (default 30; run from the repository's root)

Starts `gantry up` in a temporary folder (embedded broker + SQLite), lets it settle for 15 s,
then prints each process's share of one core over the window, and the sum.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
from tests.e2e.stack import Stack  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of_tree(root: int) -> dict[str, float]:
    """CPU-seconds of ``root`` and its descendants, by "pid command"."""
    parents: dict[int, int] = {}
    used: dict[int, tuple[float, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = ((int(fields[11]) + int(fields[12])) / TICK, command)
    found: dict[str, float] = {}
    for pid, (seconds, command) in used.items():
        ancestor = pid
        while ancestor and ancestor != root:
            ancestor = parents.get(ancestor, 0)
        if ancestor == root:
            found[f"{pid} {command}"] = seconds
    return found


def main() -> None:
    window = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    with tempfile.TemporaryDirectory() as home, Stack(Path(home)) as stack:
        assert stack.process is not None
        time.sleep(15)  # past the start-up
        before = cpu_of_tree(stack.process.pid)
        time.sleep(window)
        after = cpu_of_tree(stack.process.pid)
    total = 0.0
    for name, seconds in sorted(after.items()):
        spent = seconds - before.get(name, 0.0)
        total += spent
        print(f"  {spent / window * 100:5.1f} %  {name}")
    print(f"idle gantry up over {window:.0f} s: {total:.2f} CPU-s = {total / window * 100:.1f} % of one core")


if __name__ == "__main__":
    main()
