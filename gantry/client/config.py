"""Where ``gantry login`` keeps the gateway's address and the token: one JSON file, readable by
its owner only (0600, in a 0700 folder), like kubectl's kubeconfig or gh's hosts file.

The file is ``$GANTRY_CONFIG`` when set, else ``$XDG_CONFIG_HOME/gantry/config.json``, else
``~/.config/gantry/config.json``."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from gantry.client.errors import NOT_LOGGED_IN, CliError

FILE_MODE = 0o600
FOLDER_MODE = 0o700


@dataclass(frozen=True)
class Login:
    gateway: str
    token: str


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("GANTRY_CONFIG"):
        return Path(env["GANTRY_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "gantry" / "config.json"


def save(login: Login, path: Path) -> None:
    """Write the login at once (a reader sees the old file or the new one, never half of one)."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=FOLDER_MODE, parents=True)
    if folder.name == "gantry":  # our own folder (not the one GANTRY_CONFIG may point into)
        folder.chmod(FOLDER_MODE)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(login), out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, FILE_MODE)  # whatever the umask
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def load(path: Path) -> Login | None:
    """The kept login, or None when there is none; a damaged file is an error that names it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(NOT_LOGGED_IN, f"cannot read {path} ({exc.strerror}): fix its permissions") from exc
    try:
        found = json.loads(text)
        return Login(gateway=str(found["gateway"]).rstrip("/"), token=str(found["token"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(
            NOT_LOGGED_IN, f"{path} is not a Gantry login ({exc}): run `gantry login --gateway URL --token TOKEN`"
        ) from exc


def require(path: Path) -> Login:
    login = load(path)
    if login is None:
        raise CliError(
            NOT_LOGGED_IN,
            f"not logged in (no {path}): run `gantry login --gateway URL --token TOKEN` "
            "(a token from `gantry token issue --user NAME --role ROLE`)",
        )
    return login


def remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
