"""The client CLI against a running ``gantry up``, as the README walks it: log in, list
environments and versions, release, deploy and wait, read the history as JSON, scale, roll back,
tail the events (once, and following), and the exit codes of a refused token and a gateway that
is down."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gantry.client import errors
from shared.auth import issue_token
from shared.events import ALL_TOPICS
from shared.kafka_admin import ready_partitions
from tests.e2e.stack import Stack, free_port_range, post_pipeline_hook
from tests.support import eventually

pytestmark = pytest.mark.e2e

PROJECT, SERVICE, ENV = "shop", "web", "qa"
WHERE = ("--project", PROJECT, "--service", SERVICE, "--environment", ENV)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with Stack(tmp_path_factory.mktemp("cli")) as running:
        yield running


async def test_the_embedded_broker_holds_one_partition_per_topic(stack: Stack) -> None:
    """One instance of each service runs under ``gantry up``, and the embedded broker's work for
    each fetch grows with the partitions it names (ADR 2)."""
    partitions, missing = await ready_partitions(stack.bootstrap, list(ALL_TOPICS))
    assert missing == []
    assert sorted({tp.partition for tp in partitions}) == [0]
    assert len(partitions) == len(ALL_TOPICS)


class Cli:
    """``gantry`` run as a user runs it, with a config file of its own."""

    def __init__(self, stack: Stack, config: Path) -> None:
        self.config = config
        self.env = stack.env | {"GANTRY_CONFIG": str(config)}

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "gantry.cli", *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == code, f"gantry {' '.join(args)} → {done.returncode}:\n{done.stdout}{done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)


async def _a_service_with_two_versions(stack: Stack, cli: Cli) -> list[str]:
    """As the org admin (over HTTP: the CLI does not create projects) a project, a service and an
    environment; `gantry release` releases the service there; two pipelines make two versions."""
    async with stack.client() as api:
        assert (
            await api.post("/api/catalog/projects", json={"code": PROJECT, "name": "Shop", "gitlab_group": "acme"})
        ).is_success
        body = {"code": SERVICE, "name": "Web", "group": "com.acme.shop", "type": "python-fastapi"}
        created = await api.post(f"/api/catalog/projects/{PROJECT}/services", json=body)
        assert created.status_code == 201, created.text
        assert (
            await api.post("/api/release/environments", json={"code": ENV, "name": "QA", "tier": "test"})
        ).is_success
        unreleased = {"code": "api", "name": "API", "group": "com.acme.shop", "type": "go-http"}
        assert (await api.post(f"/api/catalog/projects/{PROJECT}/services", json=unreleased)).status_code == 201

        async def released() -> str | None:  # release learns of the service from catalog's event
            command = [sys.executable, "-m", "gantry.cli", "release", *WHERE]
            done = await asyncio.to_thread(subprocess.run, command, env=cli.env, capture_output=True, text=True)
            return done.stdout if done.returncode == 0 else None

        assert f"{PROJECT}/{SERVICE} released to {ENV}" in await eventually(released, timeout=60, interval=0.3)
        auto = await api.put(f"/api/release/projects/{PROJECT}/services/{SERVICE}/auto-release", json={"enabled": True})
        assert auto.status_code == 200
        names = []
        for pipeline in (7, 8):
            await post_pipeline_hook(api, created.json(), pipeline)
            names.append(str((await stack.wait_for_version(api, PROJECT, SERVICE, pipeline))["name"]))

        async def deploy_knows_both() -> bool | None:
            found = (await api.get(f"/api/deploy/services/{PROJECT}/{SERVICE}")).json()
            versions = {v["version"] for e in found.get("environments", ()) for v in e["versions"]}
            return True if versions >= set(names) else None

        await eventually(deploy_knows_both, timeout=60, interval=0.2)
    return names


def _follow(cli: Cli) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "gantry.cli", "events", "tail", "--follow", "--topic", "deploy.status", "-o", "json"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True).start()
    return process, lines


def _status_of(lines: queue.Queue[str], deployment_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        event = json.loads(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        if event["data"].get("deployment_id") == deployment_id:
            return event  # type: ignore[no-any-return]


async def test_the_cli_walk(stack: Stack, tmp_path: Path) -> None:
    cli = Cli(stack, tmp_path / "cfg" / "gantry" / "config.json")
    admin = issue_token(stack.env["GANTRY_SECRET"], "ada", ["org-admin"])
    said = cli("login", "--gateway", stack.gateway, "--token", admin).stdout
    assert said.strip() == f"logged in to {stack.gateway} as ada (org-admin); kept in {cli.config}"
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config.parent.stat().st_mode) == 0o700
    assert cli("--version").stdout.strip() == "gantry 0.1.0"

    first, second = await _a_service_with_two_versions(stack, cli)
    table = cli("get", "environments").stdout.splitlines()
    assert table[0].split()[:3] == ["CODE", "NAME", "TIER"] and table[1].split()[:3] == [ENV, "QA", "test"]
    assert [v["name"] for v in cli.json("get", "versions", "--project", PROJECT, "--service", SERVICE)] == [
        second,
        first,
    ]

    deployed = cli("deploy", *WHERE, "--version", first, "--resources", "", "--wait", "-o", "json")
    assert json.loads(deployed.stdout)["state"] == "rendered"  # no cluster: the manifests are written
    assert "deployment " in deployed.stderr and " rendered" in deployed.stderr, "progress on stderr"
    follower, lines = _follow(cli)
    try:  # the recent events come once the stream is subscribed: the first deployment's among them
        assert _status_of(lines, json.loads(deployed.stdout)["id"])["data"]["version"] == first
        latest = cli("deploy", *WHERE, "-o", "id").stdout.strip()  # "latest" by default
        assert _status_of(lines, latest)["data"]["version"] == second, "--follow shows the new event"
        done = cli("wait", latest, "--timeout", "60")
        assert done.stdout.startswith(f"deployment {latest} rendered: deploy {PROJECT}/{SERVICE} {second}")
    finally:
        os.killpg(follower.pid, signal.SIGINT)
        assert follower.wait(timeout=30) == 130, "Ctrl-C ends --follow"

    history = cli.json("get", "deployments", *WHERE)
    assert [(d["id"], d["version"]) for d in history][:1] == [(latest, second)] and len(history) == 2
    scaled = cli.json("scale", *WHERE, "--replicas", "3", "--wait")
    assert (scaled["action"], scaled["replicas"], scaled["state"]) == ("scale", 3, "rendered")
    rolled = cli.json("rollback", *WHERE, "--wait")
    assert (rolled["action"], rolled["version"]) == ("rollback", first)
    services = cli("get", "services").stdout.splitlines()
    assert services[1].split()[:5] == [PROJECT, SERVICE, ENV, first, "-"] and len(services) == 2
    in_project = cli.json("get", "services", "--project", PROJECT)
    assert [(s["service"], len(s["environments"])) for s in in_project] == [(SERVICE, 1), ("api", 0)], (
        "with --project, the services released nowhere too"
    )

    tail = cli("events", "tail", "--topic", "deploy.status", "--limit", "200", "-o", "json").stdout.splitlines()
    statuses = [json.loads(line)["data"] for line in tail]
    assert {s["deployment_id"] for s in statuses} >= {d["id"] for d in history} | {scaled["id"], rolled["id"]}
    assert "deploy.status" in cli("events", "tail", "--limit", "5").stdout

    missing = cli("wait", "no-such-deployment", code=errors.REFUSED)
    assert missing.stderr.startswith("gantry: 404 GET /api/deploy/deployments/no-such-deployment: ")


async def test_exit_codes_of_a_refused_token_and_a_gateway_that_is_down(stack: Stack, tmp_path: Path) -> None:
    cli = Cli(stack, tmp_path / "config.json")
    cli("get", "environments", code=errors.NOT_LOGGED_IN)
    forged = issue_token("another installation's secret, 32 bytes or more", "eve", ["org-admin"])
    refused = cli("login", "--gateway", stack.gateway, "--token", forged, code=errors.NOT_LOGGED_IN)
    assert f"the gateway at {stack.gateway} refused the token" in refused.stderr and not cli.config.exists()

    down = f"http://127.0.0.1:{free_port_range(1)}"  # nothing listens there
    cli.config.write_text(json.dumps({"gateway": down, "token": forged}))
    gone = cli("get", "environments", code=errors.UNREACHABLE)
    assert (
        gone.stderr
        == f"gantry: cannot reach the gateway at {down} (connection refused): is Gantry running? `gantry up`\n"
    )
    cli.config.write_text(json.dumps({"gateway": stack.gateway, "token": forged}))
    assert "refused the token" in cli("deploy", *WHERE, code=errors.NOT_LOGGED_IN).stderr
    cli("deploy", *WHERE, "--replicas", "0", code=errors.USAGE)
