"""Ctrl-C on ``gantry up`` with the embedded broker (which keeps events in memory only) loses
nothing: events in flight reach their consumers before the broker stops, as a restart shows."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, post_pipeline_hook, stop_signal
from tests.support import eventually

pytestmark = pytest.mark.e2e
PIPELINES = range(1, 41)


async def test_ctrl_c_drains_events_in_flight(tmp_path: Path) -> None:
    with Stack(tmp_path) as stack:
        async with stack.client() as api:
            assert (
                await api.post(
                    "/api/catalog/projects", json={"code": "drain", "name": "Drain", "gitlab_group": "drain"}
                )
            ).status_code == 201
            service = (
                await api.post(
                    "/api/catalog/projects/drain/services",
                    json={"code": "api", "name": "Api", "group": "drain", "type": "go-http"},
                )
            ).json()
            assert (
                await api.post("/api/release/environments", json={"code": "qa", "name": "QA", "tier": "test"})
            ).status_code == 201
            base = "/api/release/projects/drain/services/api"

            async def released() -> bool:
                return (await api.post(f"{base}/releases", json={"environment": "qa"})).status_code == 201

            await eventually(released, timeout=60, interval=0.1)
            assert (await api.put(f"{base}/auto-release", json={"enabled": True})).status_code == 200

            async def known() -> bool:  # versioning learns of the service through service.created
                answer = await api.get("/api/versioning/projects/drain/services/api/versions")
                return answer.status_code == 200

            await eventually(known, timeout=60, interval=0.1)
            # a burst of hooks, then Ctrl-C at once, with the chain still running
            answers = await asyncio.gather(*(post_pipeline_hook(api, service, n) for n in PIPELINES))
            assert all(answer["accepted"] for answer in answers)
    assert "drained" in "".join(stack.output), "".join(stack.output)

    with Stack(tmp_path) as restarted:  # same data folder, a new (empty) embedded broker
        async with restarted.client() as api:
            versions = (await api.get("/api/versioning/projects/drain/services/api/versions")).json()
            releases = (await api.get(f"{base}/releases/qa/versions")).json()
    assert sorted(v["pipeline_id"] for v in versions) == list(PIPELINES)
    assert len(releases) == len(PIPELINES), "every version.created reached release before the broker stopped"


def test_a_second_gantry_on_taken_ports_says_so(tmp_path: Path) -> None:
    with Stack(tmp_path / "first") as first:
        second = subprocess.run(
            [sys.executable, "-m", "gantry.cli", "up"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**first.env, "GANTRY_HOME": str(tmp_path / "second")},
        )
    assert second.returncode == 1
    assert f"port {first.port_base} (gateway)" in second.stderr and "GANTRY_PORT_BASE" in second.stderr


def test_a_harness_started_with_ctrl_c_ignored_still_stops_gantry_up_cleanly(tmp_path: Path) -> None:
    """A benchmark a script runs in the background (``python -m bench.chain_load &``) has SIGINT
    ignored, and so has the ``gantry up`` it starts: the harness stops it with SIGTERM instead, so
    the run still ends cleanly and prints its figures (it was killed after 60 s, its tables lost)."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert stop_signal() == signal.SIGTERM
        with Stack(tmp_path) as stack:
            pass
        assert stack.process is not None and stack.process.returncode == 0
        assert "stopped" in "".join(stack.output), "".join(stack.output)
    finally:
        signal.signal(signal.SIGINT, before)
    assert stop_signal() == signal.SIGINT
