"""The exit codes scripts can rely on, and the error that carries one to ``main``."""

from __future__ import annotations

OK = 0
REFUSED = 1  # the API answered with an error (its detail is printed)
USAGE = 2  # bad arguments, a bad setting, no installation secret
UNREACHABLE = 3  # the gateway did not answer
NOT_LOGGED_IN = 4  # no login kept, or the token was refused (401)
NOT_DONE = 5  # a deployment failed, or waiting for it timed out

EXIT_CODES = {
    OK: "done",
    REFUSED: "the API refused the request: its detail is printed",
    USAGE: "usage: bad arguments, a bad setting, no installation secret found",
    UNREACHABLE: "cannot reach the gateway (the address is printed)",
    NOT_LOGGED_IN: "not logged in, or the token was refused: `gantry login` again",
    NOT_DONE: "the deployment failed, or `--wait`/`gantry wait` timed out",
}


class CliError(Exception):
    """An error to print on stderr (prefixed ``gantry:``) and the exit code to end with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
