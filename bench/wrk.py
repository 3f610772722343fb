"""``wrk``, the HTTP load generator (a C client, so it leaves the cores to what it measures), from
Debian's package: installed with apt-get when missing, as the PostgreSQL test harness does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.harness.postgres_server import as_root

SCRIPT = Path(__file__).with_name("pipeline_hooks.lua")
INSTALL = (
    ("apt-get", "update", "-q"),
    ("apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", "wrk"),
)


def wrk_binary() -> str:
    """The path of ``wrk``, installing Debian's package first when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in INSTALL:
        try:
            step = as_root(command, euid=os.geteuid(), sudo=shutil.which("sudo"))
        except RuntimeError:
            raise RuntimeError(
                "wrk is not installed and installing it needs root: run `sudo apt-get install wrk`"
            ) from None
        done = subprocess.run(step, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-10:])
            raise RuntimeError(f"installing wrk: `{' '.join(step)}` exited {done.returncode}:\n{tail}")
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("Debian's wrk package was installed but no `wrk` is on PATH")
    return found


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    not_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def accepted_per_second(self) -> float:
        return (self.requests - self.not_2xx) / self.seconds if self.seconds else 0.0


def parse_wrk_output(output: str) -> WrkResult:
    """The figures ``pipeline_hooks.lua``'s ``done()`` printed on its ``WRK {...}`` line."""
    line = next((line for line in output.splitlines() if line.startswith("WRK ")), None)
    if line is None:
        raise ValueError("wrk printed no WRK line (did the script run?):\n" + output[-2000:])
    figures = json.loads(line[4:])
    return WrkResult(
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        not_2xx=figures["not_2xx"],
        socket_errors=figures["socket_errors"],
        p50_ms=figures["p50_us"] / 1000,
        p90_ms=figures["p90_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
    )


def run_wrk(url: str, *, connections: int, seconds: int, script_args: list[str], threads: int = 2) -> WrkResult:
    command = [
        wrk_binary(),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        url,
        "--",
        *script_args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    result = parse_wrk_output(done.stdout)
    if result.not_2xx:
        print(f"wrk: {result.not_2xx} hooks refused; first answers:\n{done.stderr.strip()}")
    return result
