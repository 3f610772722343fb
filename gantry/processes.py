"""Small process helpers shared by `gantry up` and the test harness's servers."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(address: str) -> bool:
    """True when something accepts TCP connections at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note when it does not exist."""
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM ``proc``, wait up to ``timeout`` seconds, then SIGKILL it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# A process that dies is started again after 1 s, 2 s, 4 s … at most MAX_RESTART_DELAY_SECONDS;
# one that dies again after MAX_RESTARTS restarts in a row keeps dying: restarting it only hides why.
FIRST_RESTART_DELAY_SECONDS = 1.0
MAX_RESTART_DELAY_SECONDS = 10.0
MAX_RESTARTS = 5
# A run that lasted this long was healthy: the next death starts the count of restarts in a row over.
HEALTHY_RUN_SECONDS = 60.0


@dataclass(frozen=True)
class RestartPolicy:
    """How soon a process that died is started again, and when to stop trying."""

    first_delay: float = FIRST_RESTART_DELAY_SECONDS
    max_delay: float = MAX_RESTART_DELAY_SECONDS
    max_restarts: int = MAX_RESTARTS
    healthy_run: float = HEALTHY_RUN_SECONDS

    def delay(self, restart: int) -> float:
        """The wait before the ``restart``-th restart in a row: it doubles each time, up to ``max_delay``."""
        return float(min(self.first_delay * 2 ** (restart - 1), self.max_delay))


@dataclass
class RestartCount:
    """The restarts in a row of one process, from the moments it was started and died."""

    policy: RestartPolicy
    started_at: float
    in_a_row: int = 0

    def after_death(self, died_at: float) -> int | None:
        """The number of the restart to make now (1, 2, …), or None when the process keeps dying."""
        if died_at - self.started_at >= self.policy.healthy_run:
            self.in_a_row = 0
        if self.in_a_row >= self.policy.max_restarts:
            return None
        self.in_a_row += 1
        return self.in_a_row


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded now: the child after fork must not load anything
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: the kernel sends SIGTERM to the child if its parent dies without stopping it."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """A server with ``start()`` and ``stop()``, usable as ``with Server(...) as server:``."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
