"""A throwaway PostgreSQL cluster from Debian's packages, installed with apt when missing.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user.
By default the cluster trades durability for speed; ``durable=True`` runs it with the settings
production needs, and ``crash()`` then ``start_again()`` recover it on the same data directory.

Installing Debian's ``postgresql`` package also creates its ``main`` cluster (and starts it where a
service manager runs). That cluster is left alone: the test cluster has its own data directory,
port and socket directory, so the two never meet.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gantry.processes import ServerProcess, free_port, log_tail

SERVER_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
max_connections = 200
"""
# Fast and fragile: a crash may lose commits the clients were told about. Fine for throwaway data.
FAST_SETTINGS = """
fsync = off
synchronous_commit = off
full_page_writes = off
"""
# What production needs: a commit is acknowledged only once its WAL is on disk (synchronous_commit,
# fsync), and a page torn by a power cut can be rebuilt from the WAL (full_page_writes).
DURABLE_SETTINGS = """
fsync = on
synchronous_commit = on
full_page_writes = on
"""


@dataclass(frozen=True)
class Installer:
    """Where the server binaries are looked for, and the commands that install them when absent."""

    initdb_glob: str = "/usr/lib/postgresql/*/bin/initdb"
    commands: Sequence[Sequence[str]] = (
        ("apt-get", "update", "-q"),
        # The lock timeout waits out another install (e.g. unattended-upgrades on a fresh machine).
        ("apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", "postgresql"),
    )
    needs_root: bool = True

    def installed(self) -> list[Path]:
        """The ``bin`` directories holding an ``initdb``."""
        return [Path(p).parent for p in glob.glob(self.initdb_glob)]


DEBIAN = Installer()


def postgres_bin_dir(installer: Installer = DEBIAN) -> Path:
    """Directory of the newest installed PostgreSQL server binaries, installing them if absent."""
    if not installer.installed():
        for command in installer.commands:
            if installer.needs_root:
                command = as_root(command, euid=os.geteuid(), sudo=shutil.which("sudo"))
            _install_step(command)
    found = installer.installed()
    if not found:
        raise RuntimeError(f"PostgreSQL was installed but no {installer.initdb_glob} exists")
    return max(found, key=lambda path: int(path.parent.name))


def as_root(command: Sequence[str], *, euid: int, sudo: str | None) -> list[str]:
    """``command`` as root: as is for root, through ``sudo -n`` (never a password prompt) otherwise."""
    if euid == 0:
        return list(command)
    if sudo is None:
        raise RuntimeError(
            "PostgreSQL's server is not installed and installing it needs root: run "
            "`sudo apt-get install postgresql`, or GANTRY_TEST_SERVERS=containers with Docker running"
        )
    # sudo drops the caller's environment, so the frontend setting goes on the command line.
    return [sudo, "-n", "env", "DEBIAN_FRONTEND=noninteractive", *command]


def _install_step(command: Sequence[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        output = "\n".join(result.stdout.splitlines()[-20:])
        raise RuntimeError(f"installing PostgreSQL: `{' '.join(command)}` exited {result.returncode}:\n{output}")


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    # runuser lives in /usr/sbin, which a root shell's PATH does not always hold.
    return [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--", *command]


class LocalPostgres(ServerProcess):
    """PostgreSQL on 127.0.0.1 with trust auth, its data in a throwaway directory."""

    def __init__(self, *, durable: bool = False, installer: Installer = DEBIAN) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="gantry-postgres-"))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self.durable = durable
        self.installer = installer
        self._bin: Path | None = None

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy async URL of ``database``."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> None:
        """Install the binaries if needed, create the cluster and wait until it accepts clients."""
        self._bin = postgres_bin_dir(self.installer)
        if os.geteuid() == 0:
            _require_postgres_user()
            shutil.chown(self.workdir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-N")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(SERVER_SETTINGS.format(port=self.port, socket_dir=self.workdir))
            conf.write(DURABLE_SETTINGS if self.durable else FAST_SETTINGS)
        self.start_again(timeout)

    def crash(self) -> None:
        """Stop the server the way a crash would (``pg_ctl stop -m immediate``): no checkpoint,
        sessions cut off; the next start recovers from the WAL."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    def start_again(self, timeout: float = 60) -> None:
        """Start the server on its existing data directory and wait until it accepts clients."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", str(int(timeout)), "start")

    def postmaster_pid(self) -> int:
        """The server's first process (the first line of its ``postmaster.pid``); each connection
        is served by a child of it."""
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

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


def _require_postgres_user() -> None:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "PostgreSQL refuses to run as root and there is no `postgres` user to run it as: "
            "Debian's postgresql package creates one, a hand-made install does not"
        ) from None
