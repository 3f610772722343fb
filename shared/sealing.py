"""Secret values sealed at rest: AES-256-GCM under a key from the settings, each value stamped
with the id of the key that sealed it, so keys can rotate.

A sealed value is one string, ``gantry-sealed:v1:<key id>:<base64url(nonce + ciphertext)>``. The
key id is derived from the key itself (never the key), so an operator sees which key a value
needs without Gantry keeping names. ``context`` (where the value belongs, such as a resource and
its key) is bound to the ciphertext as associated data: a value moved elsewhere does not open.

The current key (``GANTRY_ENCRYPTION_KEY``, else one derived with HKDF from the installation
secret) seals; it and the old keys (``GANTRY_ENCRYPTION_OLD_KEYS``, and the derived key whenever
another one is current) open. ``gantry secrets rotate`` seals every stored value again under the
current key, after which the old keys may go.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:
    from shared.settings import Settings

PREFIX = "gantry-sealed:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
MAKE_A_KEY = "make one with: openssl rand -base64 32"
_DERIVATION_INFO = b"gantry sealing key v1"


class SealingError(Exception):
    """A sealed value that cannot be opened (missing key, altered value) or a key that is unusable."""


def key_id(key: bytes) -> str:
    """A short public name of ``key``: the start of a hash of it, never the key."""
    return hashlib.sha256(b"gantry-key-id:" + key).hexdigest()[:16]


def parse_key(text: str, setting: str = "GANTRY_ENCRYPTION_KEY") -> bytes:
    """A 32-byte key written as base64 (standard or URL-safe) or as 64 hex digits."""
    text = text.strip()
    candidates: list[bytes] = []
    if len(text) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(text))
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        with contextlib.suppress(binascii.Error, ValueError):
            candidates.append(decode(text + "=" * (-len(text) % 4)))
    for key in candidates:
        if len(key) == KEY_BYTES:
            return key
    raise SealingError(f"{setting} must be {KEY_BYTES} bytes written as base64 or 64 hex digits: {MAKE_A_KEY}")


def derive_key(installation_secret: str) -> bytes:
    """The default key: HKDF-SHA256 of the installation secret (``GANTRY_SECRET``)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_DERIVATION_INFO)
    return hkdf.derive(installation_secret.encode())


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def sealed_key_id(token: str) -> str:
    """The id of the key that sealed ``token``."""
    if not is_sealed(token):
        raise SealingError("this is not a sealed value")
    return token[len(PREFIX) :].partition(":")[0]


@dataclass(frozen=True)
class Keyring:
    """The key that seals, and every key that may open."""

    current: bytes
    old: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if any(len(key) != KEY_BYTES for key in (self.current, *self.old)):
            raise SealingError(f"every key must be {KEY_BYTES} bytes")

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    def seal(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.current).encrypt(nonce, plaintext.encode(), context.encode())
        return f"{PREFIX}{self.current_id}:{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"

    def open(self, token: str, *, context: str) -> str:
        kid = sealed_key_id(token)
        key = self._key(kid)
        try:
            raw = base64.urlsafe_b64decode(token[len(PREFIX) + len(kid) + 1 :].encode("ascii"))
            return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError, UnicodeError) as exc:
            raise SealingError(
                f"a value sealed with key {kid} for {context} does not open: it was altered, or belongs elsewhere"
            ) from exc

    def reseal(self, token: str, *, context: str) -> str:
        """``token`` sealed under the current key (itself when it already is)."""
        if sealed_key_id(token) == self.current_id:
            return token
        return self.seal(self.open(token, context=context), context=context)

    def _key(self, kid: str) -> bytes:
        for key in (self.current, *self.old):
            if key_id(key) == kid:
                return key
        raise SealingError(
            f"a value is sealed with key {kid}, which is neither GANTRY_ENCRYPTION_KEY ({self.current_id}) nor "
            "in GANTRY_ENCRYPTION_OLD_KEYS: add the key that sealed it to GANTRY_ENCRYPTION_OLD_KEYS"
        )


def parse_keys(text: str | None, setting: str = "GANTRY_ENCRYPTION_OLD_KEYS") -> tuple[bytes, ...]:
    """Keys separated by commas (or spaces)."""
    return tuple(parse_key(part, setting) for part in (text or "").replace(",", " ").split())


def keyring_of(settings: Settings) -> Keyring:
    """The installation's keyring: the configured key (else the derived one) seals; the old keys
    and the derived key open."""
    derived = derive_key(settings.installation_secret())
    current = parse_key(settings.encryption_key) if settings.encryption_key else derived
    old = _unique(k for k in (*parse_keys(settings.encryption_old_keys), derived) if k != current)
    return Keyring(current, old)


def _unique(keys: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(dict.fromkeys(keys))
