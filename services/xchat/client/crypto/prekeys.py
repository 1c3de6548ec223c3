"""Public prekey material and the signature contract the server re-verifies.

A device uploads these frozen values; the keys service checks each signature
with PyNaCl *without importing this package*, so the signed message layout
below is a cross-service contract and must never change for version 1::

    b"xchat-prekey-v1" || kind (1 byte) || key_id (uint32 big-endian) || public key bytes

with ``kind`` 1 = X25519 signed prekey, 2 = ML-KEM-768 PQ prekey (one-time or
signed), 3 = ML-KEM-768 last-resort PQ key. Classical one-time prekeys are
unsigned. The private halves live in :mod:`.prekey_store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .encoding import check_length
from .errors import MalformedMessageError
from .primitives import (
    ED25519_SIGNATURE_SIZE,
    MLKEM768_PUBLIC_KEY_SIZE,
    X25519_KEY_SIZE,
    ed25519_verify,
)

__all__ = [
    "MAX_KEY_ID",
    "PREKEY_SIGNATURE_DOMAIN",
    "OneTimePrekey",
    "PqPrekey",
    "PrekeyKind",
    "SignedPrekey",
    "prekey_signature_message",
]

PREKEY_SIGNATURE_DOMAIN = b"xchat-prekey-v1"
MAX_KEY_ID = 0xFFFFFFFF


class PrekeyKind(IntEnum):
    """The ``kind`` byte of the prekey signature message."""

    SIGNED_X25519 = 1
    PQ_MLKEM768 = 2
    LAST_RESORT_PQ_MLKEM768 = 3


_PUBLIC_SIZES = {
    PrekeyKind.SIGNED_X25519: X25519_KEY_SIZE,
    PrekeyKind.PQ_MLKEM768: MLKEM768_PUBLIC_KEY_SIZE,
    PrekeyKind.LAST_RESORT_PQ_MLKEM768: MLKEM768_PUBLIC_KEY_SIZE,
}


def check_key_id(key_id: int, what: str) -> int:
    if not isinstance(key_id, int) or isinstance(key_id, bool) or not 0 <= key_id <= MAX_KEY_ID:
        raise MalformedMessageError(f"{what} key id must be a uint32, got {key_id!r}")
    return key_id


def prekey_signature_message(kind: int, key_id: int, public: bytes) -> bytes:
    """The exact bytes the identity key signs for a prekey of ``kind``."""
    try:
        kind = PrekeyKind(kind)
    except ValueError as exc:
        raise MalformedMessageError(f"unknown prekey kind {kind!r}") from exc
    check_key_id(key_id, kind.name)
    check_length(f"{kind.name} public key", public, _PUBLIC_SIZES[kind])
    return PREKEY_SIGNATURE_DOMAIN + bytes([kind]) + key_id.to_bytes(4, "big") + bytes(public)


@dataclass(frozen=True, slots=True)
class SignedPrekey:
    """Medium-term X25519 prekey (SPK) with its identity signature (kind 1)."""

    key_id: int
    public: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_key_id(self.key_id, "signed prekey")
        check_length("signed prekey", self.public, X25519_KEY_SIZE)
        check_length("signed prekey signature", self.signature, ED25519_SIGNATURE_SIZE)

    def verify(self, identity_public: bytes) -> bool:
        message = prekey_signature_message(PrekeyKind.SIGNED_X25519, self.key_id, self.public)
        return ed25519_verify(identity_public, message, self.signature)


@dataclass(frozen=True, slots=True)
class OneTimePrekey:
    """Single-use X25519 prekey (OPK); unsigned, as in X3DH/PQXDH."""

    key_id: int
    public: bytes

    def __post_init__(self) -> None:
        check_key_id(self.key_id, "one-time prekey")
        check_length("one-time prekey", self.public, X25519_KEY_SIZE)


@dataclass(frozen=True, slots=True)
class PqPrekey:
    """ML-KEM-768 prekey with its identity signature.

    ``last_resort=False``: a one-time PQ prekey (PQOPK, kind 2), consumed on use.
    ``last_resort=True``: the PQ signed prekey of the spec (PQSPK, kind 3), used
    when one-time PQ prekeys have run out, rotated like the signed prekey.
    """

    key_id: int
    public: bytes
    signature: bytes
    last_resort: bool

    def __post_init__(self) -> None:
        check_key_id(self.key_id, "PQ prekey")
        check_length("PQ prekey", self.public, MLKEM768_PUBLIC_KEY_SIZE)
        check_length("PQ prekey signature", self.signature, ED25519_SIGNATURE_SIZE)

    @property
    def kind(self) -> PrekeyKind:
        return PrekeyKind.LAST_RESORT_PQ_MLKEM768 if self.last_resort else PrekeyKind.PQ_MLKEM768

    def verify(self, identity_public: bytes) -> bool:
        message = prekey_signature_message(self.kind, self.key_id, self.public)
        return ed25519_verify(identity_public, message, self.signature)
