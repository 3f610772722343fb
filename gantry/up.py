"""``gantry up``: the embedded broker (unless a Kafka cluster is configured) and the five services.

Each service runs as its own process (``python -m services.<name>``), logs to
``<home>/logs/<name>.log``; ``gantry up`` shows their progress until all are ready, then watches them:
a service that dies is started again after a growing pause, one that keeps dying stops everything.
Ctrl-C (or SIGTERM) stops every process it started, services first, then the broker.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from gantry.embedded_broker import EmbeddedBroker
from gantry.processes import RestartCount, RestartPolicy, die_with_parent, log_tail, terminate
from shared.events import ALL_TOPICS
from shared.kafka_admin import consumer_lag, create_topics
from shared.settings import SERVICES, Settings

# The embedded broker holds each fetch for the whole wait, and answers a group join after about half
# the session timeout: small values for both keep each hop and each start-up short.
EMBEDDED_DEFAULTS = {
    "GANTRY_KAFKA_FETCH_MAX_WAIT_MS": "50",  # ADR 2: fewer fetches under load, a hop still ~15–30 ms
    "GANTRY_KAFKA_FETCH_IDLE_WAIT_MS": "250",  # after a few quiet seconds: an idle Gantry sleeps
    # after 30 quiet seconds it sleeps deeper: idle 7.5 → 4.1 % of a core, the first chain after (ADR 2)
    "GANTRY_KAFKA_FETCH_SLEEP_WAIT_MS": "1000",
    "GANTRY_KAFKA_SESSION_TIMEOUT_MS": "1000",
    # It never drops a silent member of a group (a third of that timeout would be 3 heartbeats a
    # second per service, for nothing): an idle Gantry's CPU 8.7 → 7.4 % of a core (ADR 2).
    "GANTRY_KAFKA_HEARTBEAT_INTERVAL_MS": "3000",
    "GANTRY_KAFKA_IDEMPOTENCE": "false",  # it refuses idempotent producers
    # One instance of each service runs here, and the broker's work for a fetch grows with the
    # partitions it names: one partition per topic, an idle Gantry's CPU 11 % → 7 % (ADR 2).
    "GANTRY_KAFKA_PARTITIONS": "1",
}
READY_TIMEOUT_SECONDS = 120
DRAIN_TIMEOUT_SECONDS = 20
WATCH_INTERVAL_SECONDS = 0.5


class ServiceKeepsDying(RuntimeError):
    """A service died again after as many restarts in a row as the restart policy allows."""


def service_command(name: str) -> list[str]:
    return [sys.executable, "-m", f"services.{name}"]


@dataclass
class Supervisor:
    settings: Settings
    command: Callable[[str], list[str]] = field(default=service_command)
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    broker: EmbeddedBroker | None = None
    started_at: float = field(default_factory=time.monotonic)
    env: dict[str, str] = field(default_factory=dict)
    restarts: dict[str, RestartCount] = field(default_factory=dict)
    down_until: dict[str, float] = field(default_factory=dict)  # died: when its restart is due
    coming_back: dict[str, int] = field(default_factory=dict)  # restarted, not ready yet: restart number

    @property
    def logs(self) -> Path:
        return self.settings.home / "logs"

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started_at:5.1f}s] {message}", flush=True)

    def start_broker(self, env: dict[str, str]) -> None:
        if self.settings.kafka_bootstrap:
            self.say(f"Kafka: {self.settings.kafka_bootstrap} (GANTRY_KAFKA_BOOTSTRAP)")
            return
        self.broker = EmbeddedBroker(log_path=self.logs / "broker.log")
        self.broker.start()
        env["GANTRY_KAFKA_BOOTSTRAP"] = self.broker.bootstrap
        for key, value in EMBEDDED_DEFAULTS.items():
            env.setdefault(key, value)
        self.say(f"Kafka: embedded broker at {self.broker.bootstrap} (in memory)")

    def check_ports(self) -> None:
        """A port already taken would make "ready" answer from someone else's process."""
        for name in SERVICES:
            port = self.settings.port(name)
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.settings.host, port))
                except OSError as exc:
                    raise RuntimeError(
                        f"port {port} ({name}) on {self.settings.host} is in use ({exc.strerror}): is another "
                        "Gantry running? Stop it, or choose other ports with GANTRY_PORT_BASE"
                    ) from exc

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start_services(self, env: dict[str, str]) -> None:
        self.env = env
        for name in SERVICES:
            self.restarts[name] = RestartCount(self.restart_policy, started_at=time.monotonic())
            self.spawn(name)

    def spawn(self, name: str) -> None:
        with self.log_path(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                self.command(name),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
                preexec_fn=die_with_parent,  # and if we are killed outright, they stop too
            )
        self.restarts[name].started_at = time.monotonic()

    def wait_ready(self) -> None:
        # No restarts here: a service that dies before it was ever ready has nearly always hit a
        # configuration error (a bad setting, an unreachable database) that a restart would hit again.
        # Failing at once shows its log while the user is looking, not after half a minute of retries.
        pending = set(SERVICES)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        with httpx.Client(timeout=2) as client:
            while pending:
                for name in sorted(pending):
                    self.check_alive(name)
                    if _ready(client, f"{self.settings.service_url(name)}/readyz"):
                        pending.discard(name)
                        self.say(f"{name:<10} ready at {self.settings.service_url(name)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready after {READY_TIMEOUT_SECONDS}s: {', '.join(sorted(pending))}")
                time.sleep(0.2)

    def check_alive(self, name: str) -> None:
        proc = self.processes[name]
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited with code {proc.returncode}; its log ends with:\n" + log_tail(self.log_path(name))
            )

    def watch(self) -> None:
        """Keep the services running until Ctrl-C; raises ServiceKeepsDying when one keeps dying."""
        with httpx.Client(timeout=2) as client:
            while True:
                self.check_services(client)
                time.sleep(WATCH_INTERVAL_SECONDS)

    def check_services(self, client: httpx.Client) -> None:
        """One look at every service: restart those that died once their pause is over, and say
        when a restarted one is ready again."""
        for name in SERVICES:
            if name in self.down_until:
                if time.monotonic() >= self.down_until[name]:
                    self.restart(name)
            elif self.processes[name].poll() is not None:
                self.schedule_restart(name)
            elif name in self.coming_back and _ready(client, f"{self.settings.service_url(name)}/readyz"):
                restart = self.coming_back.pop(name)
                self.say(f"{name:<10} ready again at {self.settings.service_url(name)} (restart {restart})")

    def schedule_restart(self, name: str) -> None:
        code, tail = self.processes[name].returncode, log_tail(self.log_path(name))
        self.coming_back.pop(name, None)
        restart = self.restarts[name].after_death(time.monotonic())
        if restart is None:
            policy = self.restart_policy
            why = (
                f"{name} exited with code {code} after {policy.max_restarts} restarts in a row, none of "
                f"which ran {policy.healthy_run:g} s: it keeps dying"
            )
            self.note_in_log(name, f"{why}; gantry up stops")
            raise ServiceKeepsDying(f"{why}; its log ends with:\n{tail}")
        delay = self.restart_policy.delay(restart)
        message = f"{name} exited with code {code}; restarting in {delay:g} s (restart {restart})"
        self.say(f"{message}; its log ends with:\n{tail}")
        self.note_in_log(name, message)
        self.down_until[name] = time.monotonic() + delay

    def restart(self, name: str) -> None:
        number = self.restarts[name].in_a_row
        del self.down_until[name]
        self.note_in_log(name, f"restarted by gantry up (restart {number})")
        self.spawn(name)
        self.coming_back[name] = number
        self.say(f"{name:<10} restarted, pid {self.processes[name].pid} (restart {number})")

    def note_in_log(self, name: str, message: str) -> None:
        """A line in the service's own log, shaped like its other lines, so whoever reads only that
        log learns why its process changed."""
        line = {
            "event": message,
            "service": name,
            "logger": "gantry.up",
            "level": "warning",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        with self.log_path(name).open("a") as log:
            log.write(json.dumps(line) + "\n")

    def serving(self, name: str) -> bool:
        """Running and past its start: neither waiting for its restart nor restarted and still starting."""
        return self.processes[name].poll() is None and name not in self.coming_back

    def drain(self) -> None:
        """The embedded broker keeps events in memory only: before stopping it, let the events in
        flight reach their consumers. New webhooks stop first (the gateway), then we wait until
        every outbox is published and every consumer group has committed all it was sent."""
        if self.broker is None or not self.processes:
            return  # a Kafka cluster keeps them; consumers resume where they left off
        terminate(self.processes["gateway"], timeout=15)
        absent = [name for name in SERVICES if name != "gateway" and not self.serving(name)]
        if absent:
            self.say(
                f"not waiting for {', '.join(absent)} (down or restarting): events not yet consumed there "
                "are lost with the embedded broker"
            )
        deadline, quiet = time.monotonic() + DRAIN_TIMEOUT_SECONDS, 0
        while time.monotonic() < deadline:
            try:
                pending, groups = self._in_flight()
                lag = consumer_lag(self.broker.bootstrap, groups)
            except Exception as exc:  # whatever went wrong, stopping must go on
                self.say(f"cannot tell what is in flight ({exc!r}); stopping")
                return
            quiet = quiet + 1 if pending + lag == 0 else 0
            if quiet >= 2:  # twice in a row: nothing was mid-way between two services
                self.say(f"drained: every event reached its {'running ' if absent else ''}consumers")
                return
            if pending + lag:
                self.say(f"draining: {pending} events to publish, {lag} to consume")
            time.sleep(0.3)
        self.say(
            f"gave up draining after {DRAIN_TIMEOUT_SECONDS}s: events still in flight are lost "
            "with the embedded broker (GANTRY_KAFKA_BOOTSTRAP keeps them)"
        )

    def _in_flight(self) -> tuple[int, dict[str, list[str]]]:
        pending, groups = 0, {}
        with httpx.Client(timeout=5) as client:
            for name in SERVICES:
                if name == "gateway" or not self.serving(name):
                    continue
                state = client.get(f"{self.settings.service_url(name)}/readyz").json()
                pending += state["outbox_pending"] or 0
                groups[state["group"]] = state["consumes"]
        return pending, groups

    def stop(self, *, drain: bool = True) -> None:
        if drain:
            self.drain()
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            terminate(proc, timeout=15)
        if self.broker is not None:
            self.broker.stop()
        self.say("stopped")


def _ready(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["GANTRY_HOME"] = str(settings.home.resolve())
    env["GANTRY_SECRET"] = settings.installation_secret()
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_up(settings: Settings) -> int:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # readiness probes fail until the broker listens
    settings.home.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(settings)
    supervisor.logs.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    env = child_env(settings)
    try:
        supervisor.check_ports()
        supervisor.start_broker(env)
        create_topics(
            env["GANTRY_KAFKA_BOOTSTRAP"],
            list(ALL_TOPICS),
            int(env.get("GANTRY_KAFKA_PARTITIONS", settings.kafka_partitions)),  # as the services will read it
            settings.kafka_replication_factor,
        )
        supervisor.start_services(env)
        supervisor.wait_ready()
        _print_summary(settings, supervisor)
        supervisor.watch()
    except KeyboardInterrupt:
        supervisor.say("stopping…")
    except RuntimeError as exc:
        print(f"gantry up failed: {exc}", file=sys.stderr)
        supervisor.stop(drain=False)
        return 1
    supervisor.stop()
    return 0


def _print_summary(settings: Settings, supervisor: Supervisor) -> None:
    database = (
        "PostgreSQL (GANTRY_DATABASE_URL)" if settings.database_url else f"SQLite files in {settings.home.resolve()}"
    )
    supervisor.say(
        "Gantry is up.\n"
        f"  gateway (the one address):  {settings.gateway_url}   dashboard: {settings.gateway_url}/\n"
        f"  GitLab webhook:             {settings.hook_url}\n"
        f"  database:                   {database}\n"
        f"  logs:                       {supervisor.logs.resolve()}\n"
        f"  a token:                    gantry token issue --user you --role org-admin\n"
        "Press Ctrl-C to stop."
    )
