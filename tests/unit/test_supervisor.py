"""``gantry up`` keeps its services running: real child processes (a tiny HTTP server answering
``/readyz`` stands in for each service) die, and the supervisor restarts them or gives up."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gantry.processes import RestartCount, RestartPolicy
from gantry.up import ServiceKeepsDying, Supervisor
from shared.settings import SERVICES, Settings
from tests.e2e.stack import free_port_range
from tests.support import SECRET

# Serves /readyz on the port it is given, unless its "failing" file exists: then it dies at once.
FAKE_SERVICE = """
import http.server, pathlib, sys
port, failing = int(sys.argv[1]), pathlib.Path(sys.argv[2])
if failing.exists():
    sys.exit("failing on purpose")
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Ready).serve_forever()
"""
QUICK = RestartPolicy(first_delay=0.05, max_delay=0.2, max_restarts=3)
SLOW = RestartPolicy(first_delay=60, max_delay=60)


class Output:
    """What the supervisor said so far (its ``say()`` lines go to stdout)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys, self.text = capsys, ""

    def __contains__(self, part: str) -> bool:
        self.text += self.capsys.readouterr().out
        return part in self.text


def start_supervisor(home: Path, policy: RestartPolicy) -> Supervisor:
    settings = Settings(home=home, secret=SECRET, port_base=free_port_range())

    def fake_service(name: str) -> list[str]:
        return [sys.executable, "-c", FAKE_SERVICE, str(settings.port(name)), str(home / f"{name}.failing")]

    supervisor = Supervisor(settings, command=fake_service, restart_policy=policy)
    supervisor.logs.mkdir(parents=True)
    supervisor.start_services(dict(os.environ))
    supervisor.wait_ready()
    return supervisor


@pytest.fixture
def supervisor(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Supervisor]:
    supervisor = start_supervisor(tmp_path, getattr(request, "param", QUICK))
    yield supervisor
    supervisor.stop(drain=False)


def watch_until(supervisor: Supervisor, condition: Callable[[], bool], timeout: float = 20) -> None:
    """Let the supervisor watch its services until ``condition`` holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while not condition():
            assert time.monotonic() < deadline, f"condition not met within {timeout}s"
            supervisor.check_services(client)
            time.sleep(0.02)


def kill(supervisor: Supervisor, name: str) -> int:
    pid = supervisor.processes[name].pid
    os.kill(pid, signal.SIGKILL)
    return pid


def log_lines(supervisor: Supervisor, name: str) -> list[str]:
    return supervisor.log_path(name).read_text().splitlines()


def test_a_service_killed_after_it_was_ready_is_restarted(supervisor: Supervisor, capsys) -> None:
    said = Output(capsys)
    old_pid = kill(supervisor, "release")
    url = supervisor.settings.service_url("release")
    watch_until(supervisor, lambda: f"release    ready again at {url} (restart 1)" in said)

    assert "release exited with code -9; restarting in 0.05 s (restart 1)" in said
    assert f"release    restarted, pid {supervisor.processes['release'].pid} (restart 1)" in said
    assert supervisor.processes["release"].pid != old_pid
    assert httpx.get(f"{url}/readyz").status_code == 200
    notes = [json.loads(line)["event"] for line in log_lines(supervisor, "release")]
    assert notes == [
        "release exited with code -9; restarting in 0.05 s (restart 1)",
        "restarted by gantry up (restart 1)",
    ]
    assert all(supervisor.processes[name].poll() is None for name in SERVICES)


def test_the_pause_before_a_restart_grows_with_each_restart_in_a_row(supervisor: Supervisor, capsys) -> None:
    said, url = Output(capsys), supervisor.settings.service_url("versioning")
    for restart, pause in [(1, "0.05"), (2, "0.1"), (3, "0.2")]:
        kill(supervisor, "versioning")
        ready_again = f"versioning ready again at {url} (restart {restart})"
        watch_until(supervisor, lambda ready_again=ready_again: ready_again in said)
        assert f"versioning exited with code -9; restarting in {pause} s (restart {restart})" in said


def test_a_service_that_keeps_dying_makes_the_supervisor_give_up(supervisor: Supervisor, capsys) -> None:
    said = Output(capsys)
    (supervisor.settings.home / "release.failing").touch()  # from now on it dies as soon as it starts
    kill(supervisor, "release")

    with pytest.raises(ServiceKeepsDying) as gave_up:
        watch_until(supervisor, lambda: False)

    assert str(gave_up.value).startswith(
        "release exited with code 1 after 3 restarts in a row, none of which ran 60 s: it keeps dying"
    )
    assert str(gave_up.value).endswith("failing on purpose"), "it shows the end of the service's log"
    assert "release exited with code 1; restarting in 0.2 s (restart 3)" in said
    assert "keeps dying; gantry up stops" in log_lines(supervisor, "release")[-1]


@pytest.mark.parametrize("supervisor", [SLOW], indirect=True)
def test_stopping_during_the_pause_before_a_restart_stops_everything(supervisor: Supervisor, capsys) -> None:
    said = Output(capsys)
    dead = supervisor.processes["deploy"]
    kill(supervisor, "deploy")
    watch_until(supervisor, lambda: "deploy exited with code -9; restarting in 60 s (restart 1)" in said)

    supervisor.stop()  # what Ctrl-C does

    assert supervisor.processes["deploy"] is dead, "not restarted"
    assert all(process.poll() is not None for process in supervisor.processes.values())
    assert "stopped" in said


def test_the_restart_count_starts_over_after_a_healthy_run() -> None:
    policy = RestartPolicy(max_restarts=2, healthy_run=60)
    count = RestartCount(policy, started_at=0)
    assert count.after_death(5) == 1
    count.started_at = 6
    assert count.after_death(30) == 2
    count.started_at = 31
    assert count.after_death(91) == 1, "it ran 60 s: the deaths before no longer count"
    count.started_at = 92
    assert count.after_death(93) == 2
    count.started_at = 94
    assert count.after_death(95) is None, "a third restart in a row is one too many"


def test_the_pause_doubles_up_to_its_cap() -> None:
    assert [RestartPolicy().delay(restart) for restart in range(1, 7)] == [1, 2, 4, 8, 10, 10]
