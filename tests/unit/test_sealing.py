"""Sealing secret values at rest (shared/sealing.py): AES-GCM, key ids, rotation, clear refusals."""

from __future__ import annotations

import base64
import os

import pytest
from pydantic import ValidationError

from shared.sealing import (
    PREFIX,
    Keyring,
    SealingError,
    derive_key,
    key_id,
    keyring_of,
    parse_key,
    sealed_key_id,
)
from shared.settings import Settings


def _key() -> bytes:
    return os.urandom(32)


def test_a_sealed_value_opens_only_under_its_key_and_context_and_never_shows_the_plaintext():
    ring = Keyring(_key())
    token = ring.seal("s3cr3t-pw", context="prod/orders-db/password")
    assert token.startswith(PREFIX)
    assert "s3cr3t-pw" not in token
    assert sealed_key_id(token) == ring.current_id
    assert ring.open(token, context="prod/orders-db/password") == "s3cr3t-pw"
    assert ring.seal("s3cr3t-pw", context="x") != ring.seal("s3cr3t-pw", context="x")  # a fresh nonce each time
    with pytest.raises(SealingError, match="belongs elsewhere"):
        ring.open(token, context="prod/other-db/password")


def test_a_tampered_value_is_refused():
    ring = Keyring(_key())
    token = ring.seal("s3cr3t-pw", context="c")
    head, _, body = token.rpartition(":")
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[-1] ^= 0x01
    tampered = f"{head}:{base64.urlsafe_b64encode(bytes(raw)).decode()}"
    with pytest.raises(SealingError, match=f"sealed with key {ring.current_id} for c does not open"):
        ring.open(tampered, context="c")
    with pytest.raises(SealingError, match="does not open"):
        ring.open(f"{head}:!!not-base64!!", context="c")


def test_a_value_under_an_unknown_key_is_refused_naming_the_key_id():
    sealed_by = Keyring(_key())
    token = sealed_by.seal("pw", context="c")
    other = Keyring(_key())
    with pytest.raises(SealingError) as refused:
        other.open(token, context="c")
    message = str(refused.value)
    assert sealed_by.current_id in message
    assert other.current_id in message
    assert "GANTRY_ENCRYPTION_OLD_KEYS" in message


def test_rotation_reseals_under_the_new_key_and_old_keys_still_open():
    old, new = _key(), _key()
    token = Keyring(old).seal("pw", context="c")
    rotated = Keyring(new, (old,))
    assert rotated.open(token, context="c") == "pw"
    resealed = rotated.reseal(token, context="c")
    assert sealed_key_id(resealed) == key_id(new)
    assert rotated.reseal(resealed, context="c") is resealed  # already under the current key
    assert Keyring(new).open(resealed, context="c") == "pw"  # the old key is no longer needed


def test_keys_are_read_as_base64_or_hex_and_anything_else_is_refused():
    key = _key()
    assert parse_key(base64.b64encode(key).decode()) == key
    assert parse_key(base64.urlsafe_b64encode(key).decode().rstrip("=")) == key
    assert parse_key(key.hex()) == key
    with pytest.raises(SealingError, match="GANTRY_ENCRYPTION_KEY must be 32 bytes"):
        parse_key("too-short")
    with pytest.raises(ValidationError, match="GANTRY_ENCRYPTION_OLD_KEYS must be 32 bytes") as refused:
        Settings(encryption_old_keys=f"{key.hex()},not-a-key")
    assert "not-a-key" not in str(refused.value)  # a mistyped key is never echoed


def test_the_default_key_is_derived_from_the_installation_secret_and_stays_readable_after_a_new_key(tmp_path):
    derived = keyring_of(Settings(home=tmp_path, secret="installation-secret"))
    assert derived.current == derive_key("installation-secret")
    assert derived.current != derive_key("another-secret")
    token = derived.seal("pw", context="c")
    new_key = _key()
    configured = keyring_of(
        Settings(home=tmp_path, secret="installation-secret", encryption_key=base64.b64encode(new_key).decode())
    )
    assert configured.current == new_key
    assert configured.open(token, context="c") == "pw"
