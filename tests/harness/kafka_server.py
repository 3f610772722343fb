"""A single-node Apache Kafka 4 (KRaft) broker run from the Maven Central jars.

The jars are fetched once by tools/kafka/fetch.sh into ``${GANTRY_CACHE:-~/.cache/gantry}``.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from gantry.embedded_broker import wait_for_kafka
from gantry.processes import ServerProcess, free_port, log_tail, terminate

FETCH_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "kafka" / "fetch.sh"

LOG4J2_PROPERTIES = """\
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
"""


def kafka_home() -> Path:
    """The cache directory holding Kafka's ``libs/``, fetched on first use."""
    result = subprocess.run(["bash", str(FETCH_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(result.stdout.strip().splitlines()[-1])


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """KRaft combined broker+controller config, tuned for fast tests on one node."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "group.initial.rebalance.delay.ms": "0",
        # Lets clients use the short session timeouts that make group joins fast on Tansu.
        "group.min.session.timeout.ms": "500",
        "offsets.topic.replication.factor": "1",
        # One partition instead of 50 makes the first group coordinator lookup fast.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    return os.path.join(java_home, "bin", "java") if java_home else "java"


def _cluster_id() -> str:
    """A random KRaft cluster id: a UUID in unpadded URL-safe base64, never starting with "-"
    (the storage tool would read it as an option; Kafka's own Uuid.randomUuid skips those too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class ApacheKafka(ServerProcess):
    """Apache Kafka on 127.0.0.1, with its data and log in a throwaway directory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="gantry-kafka-"))
        self.log_path = self.workdir / "kafka.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> None:
        """Fetch the jars if needed, format storage, start the broker and wait until ready."""
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES)
        props = self.workdir / "server.properties"
        props.write_text(server_properties(self.workdir / "data", self.port, free_port()))
        jvm = [
            _java(),
            "-Xms128m",
            "-Xmx512m",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{kafka_home() / 'libs'}/*",
        ]
        format_storage = [*jvm, "kafka.tools.StorageTool", "format", "-t", _cluster_id()]
        with self.log_path.open("ab") as log:
            formatted = subprocess.run([*format_storage, "-c", str(props)], stdout=log, stderr=subprocess.STDOUT)
            if formatted.returncode != 0:
                raise RuntimeError(f"formatting Kafka storage failed:\n{log_tail(self.log_path)}")
            self._proc = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(props)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_kafka(self._proc, self.bootstrap, self.log_path, timeout)
        except RuntimeError:
            self._proc = None
            raise

    def stop(self) -> None:
        """Stop the broker (SIGTERM, SIGKILL after 30 s) and delete its files."""
        if self._proc is not None:
            terminate(self._proc, timeout=30)
            self._proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)
