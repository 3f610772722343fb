"""Run ``gantry up`` as a user would, on a private port range and data folder, and stop it with Ctrl-C."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from shared.auth import webhook_secret
from shared.settings import SERVICES
from tests.support import ADMIN, SECRET, eventually

START_TIMEOUT = 180
GITLAB_TIME = "%Y-%m-%d %H:%M:%S UTC"  # how GitLab writes a hook's times


def free_port_range(size: int = len(SERVICES)) -> int:
    """A base port such that base .. base+size-1 are free on loopback right now.

    Chosen below Linux's ephemeral range (32768+), where the many client connections of a test
    run take their source ports and could otherwise land on a port picked here."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - size)
        try:
            for port in range(base, base + size):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range on 127.0.0.1")


def stop_signal() -> signal.Signals:
    """How the harness tells ``gantry up`` to stop: Ctrl-C (SIGINT to its process group, as a terminal
    sends it), or SIGTERM when this process has SIGINT ignored. A harness a script started in the
    background (``python -m bench.chain_load &``) inherits SIGINT ignored, and so does ``gantry up``:
    Python installs no Ctrl-C handler then, so SIGINT would go unheard until the stop's wait ran out
    and the kill that follows lost the benchmark's tables. ``gantry up`` takes SIGTERM as Ctrl-C."""
    return signal.SIGTERM if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else signal.SIGINT


class Stack:
    def __init__(
        self,
        home: Path,
        *,
        kafka_bootstrap: str | None = None,
        database_url: str | None = None,
        kubeconfig: str | None = None,
    ):
        self.home = home / "gantry"
        self.port_base = free_port_range()
        self.kind = f"{'apache' if kafka_bootstrap else 'embedded'}+{'postgres' if database_url else 'sqlite'}"
        self.kubeconfig = kubeconfig
        if kubeconfig:
            self.kind += "+kubernetes"
        self.env = {
            **os.environ,
            "GANTRY_HOME": str(self.home),
            "GANTRY_PORT_BASE": str(self.port_base),
            "GANTRY_SECRET": SECRET,
            "GANTRY_LOG_LEVEL": "info",
            "GANTRY_KAFKA_GROUP_PREFIX": f"e2e{uuid.uuid4().hex[:8]}",
        }
        for key in (
            "GANTRY_KAFKA_BOOTSTRAP",
            "GANTRY_DATABASE_URL",
            "GANTRY_GITLAB_URL",
            "GANTRY_KUBECONFIG",
            "KUBECONFIG",
        ):
            self.env.pop(key, None)
        if kafka_bootstrap:
            self.env["GANTRY_KAFKA_BOOTSTRAP"] = kafka_bootstrap
            self.env["GANTRY_KAFKA_FETCH_MAX_WAIT_MS"] = "100"
        if database_url:
            self.env["GANTRY_DATABASE_URL"] = database_url
        if kubeconfig:
            self.env["GANTRY_KUBECONFIG"] = kubeconfig
        self.gateway = f"http://127.0.0.1:{self.port_base}"
        self.bootstrap = kafka_bootstrap or ""
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.startup_seconds = 0.0

    def __enter__(self) -> Stack:
        self.home.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gantry.cli", "up"],
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a process group of its own, like a command in a terminal
        )
        self._up = threading.Event()
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        self._up.wait(START_TIMEOUT)  # a silent hang ends here too, not only a printed line
        if self.process.poll() is not None or not self._up.is_set():
            self.stop()
            raise RuntimeError("gantry up did not come up:\n" + "".join(self.output) + self._logs())
        self.startup_seconds = time.monotonic() - started
        print(f"\ngantry up ({self.kind}) ready in {self.startup_seconds:.1f}s")
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if "Kafka: embedded broker at " in line:
                self.bootstrap = line.split("Kafka: embedded broker at ", 1)[1].split()[0]
            if "Gantry is up" in line:
                self._up.set()

    def __exit__(self, *exc: object) -> None:
        code = self.stop()
        assert code == 0, f"gantry up did not stop cleanly (exit {code}):\n{''.join(self.output)}"

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, stop_signal())
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)  # the rest of the output, up to the end of the stream
        return self.process.returncode

    def _log_files(self) -> list[Path]:
        logs = self.home / "logs"
        return sorted(logs.glob("*.log")) if logs.exists() else []

    def _logs(self) -> str:
        parts = []
        for path in self._log_files():
            parts.append(f"\n--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "".join(parts)

    def trouble(self, lines: int = 20) -> str:
        """The last warnings and errors of each service's log (JSON lines), or that there are none."""
        parts = []
        for path in self._log_files():
            found = [line for line in path.read_text(errors="replace").splitlines() if _troubled(line)]
            if found:
                parts.append(f"--- {path.name}: its last warnings and errors ---\n" + "\n".join(found[-lines:]))
        return "\n".join(parts) or f"no warning or error in the services' logs ({self.home / 'logs'})"

    def service_pids(self) -> dict[str, int]:
        """The process id of each service that ``gantry up`` started (from /proc)."""
        assert self.process is not None
        pid = self.process.pid
        found = {}
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            try:
                args = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
            except (FileNotFoundError, ProcessLookupError):
                continue  # it ended (and was reaped) since the list was read
            for arg in args:
                if arg.startswith("services."):
                    found[arg.removeprefix("services.")] = int(child)
        return found

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.gateway, headers=ADMIN, timeout=60)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gantry.cli", *args], env=self.env, capture_output=True, text=True, timeout=60
        )

    async def wait_for_version(
        self, api: httpx.AsyncClient, project: str, service: str, pipeline_id: int
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            answer = await api.get(f"/api/versioning/projects/{project}/services/{service}/versions")
            found = [v for v in answer.json() if v["pipeline_id"] == pipeline_id] if answer.status_code == 200 else []
            return found[0] if found else None

        return await eventually(probe, timeout=60, interval=0.1)


def success_hook(service: dict[str, Any], pipeline_id: int) -> dict[str, Any]:
    """The body of GitLab's Pipeline Hook for a successful pipeline of ``service`` (catalog's
    answer), with its times as GitLab writes them (a success always has ``finished_at``)."""
    now = datetime.now(UTC)
    return {
        "object_kind": "pipeline",
        "object_attributes": {
            "id": pipeline_id,
            "ref": "main",
            "tag": False,
            "sha": f"{pipeline_id:040x}",
            "status": "success",
            "created_at": (now - timedelta(minutes=3)).strftime(GITLAB_TIME),
            "finished_at": now.strftime(GITLAB_TIME),
        },
        "project": {"id": service["scm_project_id"], "path_with_namespace": service["repository_path"]},
    }


async def post_pipeline_hook(
    api: httpx.AsyncClient, service: dict[str, Any], pipeline_id: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Post a successful Pipeline Hook for ``service`` (as GitLab would) through the gateway."""
    answer = await api.post(
        "/webhooks/gitlab",
        json=success_hook(service, pipeline_id),
        headers={
            "X-Gitlab-Event": "Pipeline Hook",
            "X-Gitlab-Token": webhook_secret(SECRET, service["scm_project_id"]),
            **(headers or {}),
        },
    )
    answer.raise_for_status()
    return answer.json()  # type: ignore[no-any-return]


_TROUBLED_LEVELS = {"warning", "error", "critical", "exception"}


def _troubled(line: str) -> bool:
    """A log line at warning level or above (structlog's JSON), or a line that is not JSON (a traceback)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return bool(line.strip())
    return isinstance(entry, dict) and str(entry.get("level", "")).lower() in _TROUBLED_LEVELS
