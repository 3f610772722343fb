"""Which resource values are secret, how they are shown, and how an update replaces them: pure rules.

A key is secret when the resource declares it (``"secret": [...]``), when a key of that name was
secret in an earlier revision (a value once hidden is never shown again), or by default: its name
says password, passwd, pwd, pass, secret, token, credential(s), key (api_key, private_key, …), it is
the url/uri/dsn of a database, or its value is a URL with a password in its userinfo. Secret
values are sealed at rest (``sealed.py``) and shown masked: ``***``, or the URL with ``***`` in
place of its password (``postgresql://app:***@db/orders``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from shared.errors import InvalidInput

MASK = "***"
DATABASE = "database"
_SECRET_PART = re.compile(r"password|passwd|secret|token|credential|api_?key|private_?key", re.IGNORECASE)
_SECRET_WORDS = {"key", "keys", "pwd", "pass", "passphrase"}
_DATABASE_URL_KEYS = {"url", "uri", "dsn"}
_URL = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@]*)@(?P<rest>.*)$", re.DOTALL)


def _words(key: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)
    return {word.lower() for word in re.split(r"[^A-Za-z0-9]+", spaced) if word}


def _url_password(value: object) -> bool:
    if not isinstance(value, str) or (found := _URL.match(value)) is None:
        return False
    return ":" in found["userinfo"]


def secret_by_default(type_: str, key: str, value: object) -> bool:
    """Whether ``key`` (holding ``value``) is secret without being declared (see the module doc)."""
    if _SECRET_PART.search(key) or _words(key) & _SECRET_WORDS:
        return True
    if type_ == DATABASE and key.lower() in _DATABASE_URL_KEYS:
        return True
    return _url_password(value)


def secret_keys(
    type_: str, data: Mapping[str, Any], declared: Iterable[str] = (), inherited: Iterable[str] = ()
) -> list[str]:
    """The keys held secret: declared, secret in an earlier revision, or secret by default."""
    by_default = {key for key, value in data.items() if secret_by_default(type_, key, value)}
    return sorted({*declared, *inherited, *by_default})


def mask(value: object) -> str:
    """How a secret value is shown: a URL keeps all but its password (its user, when it has no
    password); anything else is ``***``."""
    if isinstance(value, str) and (found := _URL.match(value)) is not None:
        user, has_password, _ = found["userinfo"].partition(":")
        userinfo = f"{user}:{MASK}" if has_password else MASK
        return f"{found['head']}{userinfo}@{found['rest']}"
    return MASK


def is_masked(value: object) -> bool:
    """Whether ``value`` is a mask sent back rather than a value."""
    if value == MASK:
        return True
    found = _URL.match(value) if isinstance(value, str) else None
    return found is not None and MASK in found["userinfo"].split(":")


def shown(data: Mapping[str, Any], secret: Collection[str]) -> dict[str, Any]:
    """``data`` with its secret values masked."""
    return {key: mask(value) if key in secret else value for key, value in data.items()}


def check_secret_update(
    resource: str,
    is_set: Collection[str],
    data: Mapping[str, Any],
    keep: Collection[str],
    remove: Collection[str],
) -> None:
    """An update replaces a secret value only with a new value: each secret key set now is sent
    anew, kept (``keep``) or removed (``remove``); a mask sent back is not a value."""
    for listed, verb in ((keep, "keep"), (remove, "remove")):
        if unknown := sorted(set(listed) - set(is_set)):
            raise InvalidInput(
                f"resource {resource!r}: {verb} names {', '.join(unknown)}, which holds no secret value now "
                f"(secret values set: {', '.join(sorted(is_set)) or 'none'})"
            )
    if clash := sorted((set(keep) | set(remove)) & set(data) | set(keep) & set(remove)):
        raise InvalidInput(f"resource {resource!r}: {', '.join(clash)} is sent, kept or removed more than once")
    if masked := sorted(key for key in is_set if key in data and is_masked(data[key])):
        raise InvalidInput(
            f"resource {resource!r}: {', '.join(masked)} holds the mask, not a value: send the new value, or "
            f'keep the one it has with "keep": {masked}'
        )
    if left_out := sorted(set(is_set) - set(data) - set(keep) - set(remove)):
        raise InvalidInput(
            f"resource {resource!r}: the secret value of {', '.join(left_out)} is set and this update leaves it "
            f'out: send its new value, keep it with "keep": {left_out}, or drop it with "remove": {left_out}'
        )
