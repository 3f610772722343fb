"""The installation secret as the CLI finds it: never made anew, always said where it came from.

``gantry up`` makes the secret on its first start (``<GANTRY_HOME>/secret``). A command that signs
with it (``token issue``, ``pipeline report``, ``outbox``) run from another folder must not make a
second one: tokens signed with it would be refused by the running Gantry."""

from __future__ import annotations

from pathlib import Path

from gantry.client.errors import USAGE, CliError
from shared.settings import Settings


def find_secret(settings: Settings) -> tuple[str, str]:
    """The secret, and where it came from (``GANTRY_SECRET`` or the file's absolute path)."""
    if settings.secret:
        return settings.secret, "GANTRY_SECRET"
    path = (settings.home / "secret").resolve()
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        raise CliError(USAGE, _missing(path)) from None
    except OSError as exc:
        raise CliError(USAGE, f"cannot read the installation secret {path} ({exc.strerror})") from exc
    if not secret:
        raise CliError(USAGE, f"the installation secret {path} is empty: restore it, or set GANTRY_SECRET")
    return secret, str(path)


def _missing(path: Path) -> str:
    return (
        f"no installation secret: GANTRY_SECRET is not set and {path} does not exist. "
        "Run this in the folder where `gantry up` runs (its data folder is ./.gantry), "
        "or set GANTRY_HOME to that data folder, or GANTRY_SECRET to the secret Gantry runs with"
    )
