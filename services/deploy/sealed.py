"""A resource's values as stored: secret ones sealed, the rest in clear.

Stored, a resource (or revision, or a deployment's snapshot of it) holds ``data`` with each secret
value masked, ``sealed`` (key → sealed value, see ``shared.sealing``) and ``secret`` (the keys held
secret). Only ``open_values`` gives the values back, for the worker that applies them. Each value
is sealed as JSON (so numbers stay numbers) with its environment, resource and key as context.

Rows written before values were sealed have no ``secret``: their secret values are still in
``data``, shown masked all the same, until ``rotation.reseal_stored`` seals them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends

from services.deploy import secrecy
from shared.sealing import Keyring
from shared.service import Part

KEYRING: Part[Keyring] = Part("keyring")  # the deploy service's keyring, set at start (rotation.py)
KeyringDep = Annotated[Keyring, Depends(KEYRING)]


@dataclass
class Stored:
    """The three stored parts of a resource's values."""

    data: dict[str, Any]
    sealed: dict[str, str] = field(default_factory=dict)
    secret: list[str] = field(default_factory=list)

    @property
    def secret_set(self) -> list[str]:
        """The secret keys that hold a value."""
        return sorted(self.sealed)


def context(environment: str, resource: str, key: str) -> str:
    return f"{environment}/{resource}/{key}"


def seal_values(
    keyring: Keyring,
    where: tuple[str, str],
    values: Mapping[str, Any],
    secret: list[str],
    reuse: Mapping[str, tuple[Any, str]] | None = None,
) -> Stored:
    """``values`` (in clear) as stored. ``reuse``: key → (value, its sealed form) of the revision
    before; an unchanged value keeps its sealed form, so equal values compare equal when sealed."""
    environment, resource = where
    sealed: dict[str, str] = {}
    for key in secret:
        if key not in values:
            continue
        earlier = (reuse or {}).get(key)
        if earlier is not None and earlier[0] == values[key]:
            sealed[key] = earlier[1]
        else:
            plain = json.dumps(values[key], sort_keys=True)
            sealed[key] = keyring.seal(plain, context=context(environment, resource, key))
    return Stored(data=secrecy.shown(values, secret), sealed=sealed, secret=list(secret))


def open_values(keyring: Keyring, where: tuple[str, str], stored: Stored) -> dict[str, Any]:
    """The values in clear (``SealingError`` when a key that sealed one is missing, or it was altered)."""
    environment, resource = where
    values = dict(stored.data)
    for key, token in stored.sealed.items():
        values[key] = json.loads(keyring.open(token, context=context(environment, resource, key)))
    return values


def stored_of(data: Mapping[str, Any] | None, sealed: Mapping[str, str] | None, secret: list[str] | None) -> Stored:
    """A row's stored parts; a row from before sealing (``secret`` None) is all in clear."""
    return Stored(data=dict(data or {}), sealed=dict(sealed or {}), secret=list(secret or []))


def public_view(type_: str, stored: Stored, *, legacy: bool) -> dict[str, Any]:
    """What an answer shows: ``data`` masked, ``secret`` (the keys held secret) and ``secret_set``
    (those with a value). A row from before sealing is masked by the default rules."""
    if legacy:
        secret = secrecy.secret_keys(type_, stored.data)
        return {
            "data": secrecy.shown(stored.data, secret),
            "secret": secret,
            "secret_set": sorted(k for k in secret if k in stored.data),
        }
    return {"data": dict(stored.data), "secret": list(stored.secret), "secret_set": stored.secret_set}
