"""Field encryption: AES-256-GCM with a key ring, row-bound associated data, blind indexes.

- `ENCRYPTION_KEYS="kid:base64key,kid2:base64key"`: the first key encrypts, every key
  decrypts, so keys rotate without downtime (`flask crypto rotate` re-encrypts old rows).
- A ciphertext is `v1.<kid>.<base64url(nonce || ciphertext+tag)>`. Its associated data is
  `table:column:row id`, so a ciphertext copied to another row or column does not decrypt.
- Exact lookup uses an HMAC-SHA256 blind index (`BLIND_INDEX_KEY`) of the normalised value.
- `EncryptedField` makes a model attribute transparent: assigning plaintext stores the
  ciphertext and the blind index; reading decrypts. (A column type alone cannot bind the
  ciphertext to its row: it never sees the row id.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Flask, current_app

from myapp.core.db import new_id
from myapp.settings import KEY_BYTES, KEY_ID_PATTERN, Settings, decode_key, parse_key_ring

VERSION = "v1"
NONCE_BYTES = 12
_EXTENSION = "myapp.crypto"


class CryptoError(Exception):
    """A ciphertext that cannot be decrypted (unknown key, tampered, or moved)."""


def generate_key(kid: str) -> str:
    """A new ring entry `kid:base64key` from 32 random bytes."""
    if not KEY_ID_PATTERN.fullmatch(kid):
        raise ValueError("kid must match [A-Za-z0-9_-]{1,32}")
    return f"{kid}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


@dataclass(frozen=True)
class KeyRing:
    """Keys by id; `active` encrypts."""

    keys: dict[str, bytes]
    active: str

    @classmethod
    def from_setting(cls, value: str) -> KeyRing:
        """Build from the `ENCRYPTION_KEYS` format; the first key is active."""
        keys = parse_key_ring(value)
        return cls(keys=keys, active=next(iter(keys)))

    def encrypt(self, plaintext: str, *, aad: str) -> str:
        """Encrypt with the active key, binding `aad`."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.active]).encrypt(nonce, plaintext.encode(), aad.encode())
        payload = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{VERSION}.{self.active}.{payload}"

    def decrypt(self, token: str, *, aad: str) -> str:
        """Decrypt with the key named in the token; `CryptoError` on any mismatch."""
        version, kid, payload = _split(token)
        key = self.keys.get(kid)
        if version != VERSION or key is None:
            raise CryptoError("unknown ciphertext version or key id")
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            plain = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad.encode())
        except (InvalidTag, binascii.Error, ValueError):
            raise CryptoError("ciphertext does not verify for this row and column") from None
        return plain.decode()


def key_id_of(token: str) -> str:
    """The key id a ciphertext was sealed with."""
    return _split(token)[1]


def _split(token: str) -> tuple[str, str, str]:
    parts = token.split(".", 2)
    if len(parts) != 3:
        raise CryptoError("not a ciphertext")
    return parts[0], parts[1], parts[2]


def blind_index(value: str, *, key: bytes, context: str) -> str:
    """Deterministic HMAC-SHA256 of `context` + value, for exact-match lookups."""
    return hmac.new(key, f"{context}\x00{value}".encode(), hashlib.sha256).hexdigest()


def key_fingerprint(key: bytes) -> str:
    """A short public name for a key (never the key): the first 12 hex of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:12]


@dataclass(frozen=True)
class Crypto:
    """The application's key ring and blind-index key."""

    ring: KeyRing
    index_key: bytes
    previous_index_key: bytes | None = None

    def index(self, value: str, *, context: str) -> str:
        """Blind index of an already-normalised value (the current key)."""
        return blind_index(value, key=self.index_key, context=context)

    def indexes(self, value: str, *, context: str) -> list[str]:
        """Every index a stored row may hold for `value`: the current key's, and during a
        key change the previous key's (rows `flask crypto reindex` has not reached)."""
        found = [self.index(value, context=context)]
        if self.previous_index_key is not None:
            found.append(blind_index(value, key=self.previous_index_key, context=context))
        return found


def init_crypto(app: Flask, settings: Settings) -> None:
    """Build the app's key ring and blind-index key from settings."""
    previous = settings.blind_index_key_previous
    app.extensions[_EXTENSION] = Crypto(
        ring=KeyRing.from_setting(settings.encryption_keys.get_secret_value()),
        index_key=decode_key(settings.blind_index_key.get_secret_value()),
        previous_index_key=decode_key(previous.get_secret_value()) if previous else None,
    )


def crypto() -> Crypto:
    """The current application's `Crypto`."""
    return current_app.extensions[_EXTENSION]


def row_aad(table: str, column: str, row_id: Any) -> str:
    """Associated data that binds a ciphertext to one cell."""
    return f"{table}:{column}:{row_id}"


class EncryptedField:
    """Model attribute stored encrypted in `<name>_ciphertext`, indexed in `<name>_bidx`.

    The model must assign its primary key before the value (ULIDs are generated in
    Python, so `obj.id` is set on first use when still empty).
    """

    def __init__(
        self, table: str, column: str, *, normalise: Callable[[str], str] = str.strip
    ) -> None:
        self.table = table
        self.column = column
        self.normalise = normalise

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.cipher_attr = f"{name}_ciphertext"
        self.index_attr = f"{name}_bidx"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        token = getattr(obj, self.cipher_attr)
        if token is None:
            return None
        return crypto().ring.decrypt(token, aad=row_aad(self.table, self.column, obj.id))

    def __set__(self, obj: Any, value: str | None) -> None:
        if value is None:
            setattr(obj, self.cipher_attr, None)
            setattr(obj, self.index_attr, None)
            return
        if obj.id is None:
            obj.id = new_id()
        normalised = self.normalise(value)
        box = crypto()
        aad = row_aad(self.table, self.column, obj.id)
        setattr(obj, self.cipher_attr, box.ring.encrypt(normalised, aad=aad))
        setattr(obj, self.index_attr, box.index(normalised, context=f"{self.table}.{self.column}"))

    def lookup_indexes(self, value: str) -> list[str]:
        """Every index a row holding `value` may have (two during a key change)."""
        return crypto().indexes(self.normalise(value), context=f"{self.table}.{self.column}")

    def reindex(self, obj: Any) -> bool:
        """Recompute the blind index with the current key; True when it changed."""
        value = self.__get__(obj)
        if value is None:
            return False
        fresh = crypto().index(value, context=f"{self.table}.{self.column}")
        if getattr(obj, self.index_attr) == fresh:
            return False
        setattr(obj, self.index_attr, fresh)
        return True

    def reencrypt(self, obj: Any) -> bool:
        """Re-seal with the active key when another key was used; True when changed."""
        token = getattr(obj, self.cipher_attr)
        if token is None or key_id_of(token) == crypto().ring.active:
            return False
        setattr(obj, self.name, self.__get__(obj))
        return True
