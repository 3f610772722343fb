"""``gantry up`` restarts a service process that dies, and Ctrl-C during the pause before a restart
still stops everything cleanly."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from shared.settings import SERVICES
from tests.e2e.stack import Stack
from tests.support import eventually

pytestmark = pytest.mark.e2e


async def test_a_killed_service_is_restarted_and_ctrl_c_in_the_pause_stops_cleanly(tmp_path: Path) -> None:
    with Stack(tmp_path) as stack:
        readyz = f"http://127.0.0.1:{stack.port_base + SERVICES.index('release')}/readyz"
        killed = stack.service_pids()["release"]
        os.kill(killed, signal.SIGKILL)

        async with httpx.AsyncClient(timeout=5) as client:

            async def back() -> bool:  # answering again, as a new process, and gantry up says so
                pid = stack.service_pids().get("release")
                if pid in (None, killed) or "release    ready again at " not in "".join(stack.output):
                    return False
                try:
                    return (await client.get(readyz)).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(back, timeout=45, interval=0.2)
        output = "".join(stack.output)
        assert "release exited with code -9; restarting in 1 s (restart 1)" in output, output
        log = (stack.home / "logs" / "release.log").read_text()
        assert "restarted by gantry up (restart 1)" in log

        os.kill(stack.service_pids()["release"], signal.SIGKILL)  # again: this time the pause is 2 s

        async def pausing() -> bool:
            return "restarting in 2 s (restart 2)" in "".join(stack.output)

        await eventually(pausing, timeout=10, interval=0.05)
    # leaving the block pressed Ctrl-C, and asserted that gantry up exited with 0
    output = "".join(stack.output)
    assert "not waiting for release (down or restarting)" in output, output
    assert output.count("release    restarted, pid") == 1, output
    assert "stopped" in output, output
