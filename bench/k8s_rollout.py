"""Benchmark: the Kubernetes driver against the test control plane.

    python -m bench.k8s_rollout [--rollouts 5] [--replicas 3]

Starts the control plane (built by tools/k8s/build.sh), then times, for each rollout, the
driver's apply of a new version until kubectl's rollout-complete rule holds (available = desired).
Prints the control plane's start time and the rollout times.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from services.deploy.cluster import WorkloadSpec
from services.deploy.kubernetes import KubernetesDriver
from tests.harness.k8s_control_plane import ControlPlane


async def rollouts(kubeconfig: str, count: int, replicas: int) -> list[float]:
    driver = KubernetesDriver(kubeconfig)
    timings = []
    for number in range(count):
        spec = WorkloadSpec(
            project="bench",
            service="api",
            environment="perf",
            namespace="perf",
            version=f"v{number}",
            image=f"registry.local/bench/api:v{number}",
            replicas=replicas,
        )
        started = time.monotonic()
        status = await driver.apply(spec)
        while status.state == "progressing":
            await asyncio.sleep(0.02)
            status = await driver.status("bench", "api", "perf", "perf") or status
        if status.state != "succeeded":
            raise RuntimeError(f"rollout {number} ended {status.state}: {status.message}")
        timings.append(time.monotonic() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args()
    started = time.monotonic()
    with ControlPlane(nodes=3) as plane:
        ready = time.monotonic() - started
        timings = asyncio.run(rollouts(str(plane.kubeconfig), args.rollouts, args.replicas))
    print(f"control plane: ready in {ready:.1f}s (processes started → 3 nodes Ready)")
    print(
        f"{args.replicas}-replica rollouts, apply → available = desired, over {len(timings)}: "
        f"first {timings[0] * 1000:.0f} ms, median {statistics.median(timings) * 1000:.0f} ms, "
        f"max {max(timings) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
