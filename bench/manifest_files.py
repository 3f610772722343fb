"""Benchmark: what writing one rendered manifest costs deploy, and removing an Ingress that is not there.

    python -m bench.manifest_files [--calls 3000] [--folder PATH]

In a temporary folder (under ``--folder`` if given: put it on the disk ``GANTRY_HOME`` is on), the
embedded cluster driver (``services.deploy.rendered.RenderedManifestsDriver``) is asked to:

- render one deployment's objects as YAML (``render_yaml``: Namespace, ConfigMap, Secret,
  Deployment, Service), ``--calls`` times over ten deployments;
- write one deployment's manifest file, ``--calls`` times over ten services in ten folders (the
  file is replaced by a rename each time), straight and through ``driver.apply`` as deploy calls it
  (rendering the objects and a turn on a worker thread);
- apply an Ingress without routes for a service that never had one (most services: their
  file was never written), ``--calls`` times.

Prints the CPU time of this process per call (user and system, from ``resource``) and the wall
time, each case twice.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.measures import table
from services.deploy import rendered
from services.deploy.ingress import IngressSpec
from services.deploy.rendered import RenderedManifestsDriver
from tests.unit.test_manifests import make_spec


def timed(calls: int, step: Callable[[int], None]) -> tuple[float, float, float]:
    """Wall, user and system microseconds per call of ``step``."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for number in range(calls):
        step(number)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return (
        wall / calls * 1e6,
        (after.ru_utime - before.ru_utime) / calls * 1e6,
        (after.ru_stime - before.ru_stime) / calls * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--folder", type=Path, default=None, help="where the temporary folder goes")
    args = parser.parse_args()
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(dir=args.folder) as root:
        driver = RenderedManifestsDriver(Path(root))
        specs = [make_spec(replicas=1 + number) for number in range(10)]
        paths = [
            driver.path(spec.project, f"{spec.service}-{number}", spec.environment, f"ns-{number}")
            for number, spec in enumerate(specs)
        ]
        text = rendered.render_yaml(rendered.render_objects(specs[0]), paths[0].name)
        unrouted = [IngressSpec("bench", f"svc-{number}", "dev", f"ns-{number}") for number in range(10)]
        loop = asyncio.new_event_loop()
        objects = [rendered.render_objects(spec) for spec in specs]
        cases: list[tuple[str, Callable[[int], None]]] = [
            (
                "render one manifest (render_yaml)",
                lambda n: None if rendered.render_yaml(objects[n % 10], "a.yaml") else None,
            ),
            ("write one manifest file", lambda n: rendered._write_atomically(paths[n % 10], text)),
            (
                "driver.apply (render, worker thread, write)",
                lambda n: loop.run_until_complete(driver.apply(specs[n % 10])),
            ),
            (
                "Ingress without routes, never written",
                lambda n: loop.run_until_complete(driver.apply_ingress(unrouted[n % 10])),
            ),
        ]
        try:
            for _ in range(2):
                for name, step in cases:
                    step(0)  # its folder made, its first file written: what follows is the steady state
                    wall, user, system = timed(args.calls, step)
                    rows.append([name, f"{user + system:.1f}", f"{user:.1f}", f"{system:.1f}", f"{wall:.1f}"])
        finally:
            loop.close()
    print(f"\nrendered manifests, {args.calls} calls per case, µs per call (this process):")
    print(table(["case", "CPU", "user", "system", "wall"], rows))


if __name__ == "__main__":
    main()
