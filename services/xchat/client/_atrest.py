"""Local state at rest: field-level AEAD under a key the app keeps outside the database.

``LocalState`` passes every secret value through a :class:`FieldCipher` on its
way into and out of SQLite: meta values (identity seed, prekey private keys,
profile keys, the refresh token, ...), ratchet sessions (root, chain and
skipped message keys), inbox plaintexts and outbox envelopes. Row keys stay
in clear so SQLite can index them: peer device ids, account names, message
ids, mailbox sequences, timestamps (docs/adr/0012-sdk-state-at-rest.md weighs
this against SQLCipher, which would hide them too).

Sealed field::

    version u8 = 1 || nonce (12, random) || AES-256-GCM(field_key, nonce, value, ad)
    field_key = HKDF-SHA256(ikm = state key, salt = "", info = FIELD_KEY_INFO)
    ad        = AD_PREFIX || location

``location`` names the row the value belongs to (table and row key), so a
value moved to another row (one peer's session filed under another device,
an inbox row relabelled with another sender) fails authentication instead of
being believed. A check value (meta row ``state_key_check``, a sealed
constant) tells a wrong key at open, before anything is read or written.

Without a state key (:class:`PlainFields`) values are stored as they are:
the behaviour of the SDK before keys at rest, for apps that encrypt the
device's storage themselves (docs/crypto.md warns about it).

Nonces are random: 2**32 sealed values per key keep the collision
probability under 2**-32 (NIST SP 800-38D's bound); a device writes a few
values per message, so that is billions of messages.
"""

from __future__ import annotations

import os
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from xchat.client.errors import StateKeyError

STATE_KEY_SIZE = 32
FIELD_FORMAT_VERSION = 1
FIELD_KEY_INFO = b"xchat local state field key v1"
AD_PREFIX = b"xchat-state-v1\x00"
NONCE_SIZE = 12
# The meta row holding the key check value (never sealed itself: it is the seal).
CHECK_META_KEY = "state_key_check"
_CHECK_PLAINTEXT = b"xchat local state: key check"
_CHECK_LOCATION = "meta\x00" + CHECK_META_KEY


def location(table: str, *parts: str) -> str:
    """The associated data naming one row: table and row key, NUL-separated (ids hold no NUL)."""
    return "\x00".join((table, *parts))


class FieldCipher(Protocol):
    """How ``LocalState`` turns a value into what it stores, and back."""

    @property
    def encrypted(self) -> bool: ...

    def seal(self, where: str, value: bytes) -> bytes: ...

    def open(self, where: str, stored: bytes) -> bytes: ...


class PlainFields:
    """No state key: values are stored as they are."""

    encrypted = False

    def seal(self, where: str, value: bytes) -> bytes:
        return value

    def open(self, where: str, stored: bytes) -> bytes:
        return stored


class AeadFields:
    """AES-256-GCM per value, under a key derived from the app's state key."""

    encrypted = True

    def __init__(self, state_key: bytes) -> None:
        if not isinstance(state_key, bytes) or len(state_key) != STATE_KEY_SIZE:
            raise ValueError(
                f"state_key must be {STATE_KEY_SIZE} random bytes (keep it in the platform key store, "
                "or derive it from a passphrase with a slow KDF such as scrypt)"
            )
        field_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=FIELD_KEY_INFO).derive(state_key)
        self._aead = AESGCM(field_key)

    def seal(self, where: str, value: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return bytes([FIELD_FORMAT_VERSION]) + nonce + self._aead.encrypt(nonce, value, AD_PREFIX + where.encode())

    def open(self, where: str, stored: bytes) -> bytes:
        if len(stored) < 1 + NONCE_SIZE + 16 or stored[0] != FIELD_FORMAT_VERSION:
            raise StateKeyError(f"stored value at {_printable(where)} is not sealed by this SDK (file damaged or edited)")
        nonce = stored[1 : 1 + NONCE_SIZE]
        try:
            return self._aead.decrypt(nonce, stored[1 + NONCE_SIZE :], AD_PREFIX + where.encode())
        except InvalidTag as exc:
            raise StateKeyError(
                f"stored value at {_printable(where)} failed authentication (file damaged, edited or rows moved)"
            ) from exc

    def check_value(self) -> bytes:
        return self.seal(_CHECK_LOCATION, _CHECK_PLAINTEXT)

    def matches(self, check_value: bytes) -> bool:
        try:
            return self.open(_CHECK_LOCATION, check_value) == _CHECK_PLAINTEXT
        except StateKeyError:
            return False


def _printable(where: str) -> str:
    return where.replace("\x00", "/")
