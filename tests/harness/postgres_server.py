"""A throwaway PostgreSQL cluster from Debian's packages, installed with apt when missing.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from gantry.processes import ServerProcess, free_port, log_tail

SERVER_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
"""


def postgres_bin_dir() -> Path:
    """Directory of the newest installed PostgreSQL server binaries, installing them if absent."""
    if not _installed():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True, env=env)
    return max(_installed(), key=lambda path: int(path.parent.name))


def _installed() -> list[Path]:
    return [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class LocalPostgres(ServerProcess):
    """PostgreSQL on 127.0.0.1 with trust auth, its data in a throwaway directory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="gantry-postgres-"))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self._bin: Path | None = None

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy async URL of ``database``."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> None:
        """Install the binaries if needed, create the cluster and wait until it accepts clients."""
        self._bin = postgres_bin_dir()
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-N")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(SERVER_SETTINGS.format(port=self.port, socket_dir=self.workdir))
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
                  "-t", str(int(timeout)), "start")  # fmt: skip

    def create_database(self, name: str) -> None:
        """Create database ``name`` (owned by ``postgres``)."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def stop(self) -> None:
        """Fast shutdown (``pg_ctl stop -m fast``) and delete the cluster's files."""
        if self._bin is not None and (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        assert self._bin is not None, "start() first"
        result = subprocess.run(
            _as_postgres([str(self._bin / program), *args]),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({result.returncode}):\n{result.stdout}\n{self.log_path}:\n{log_tail(self.log_path)}"
            )

