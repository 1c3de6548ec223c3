"""The device identity key: one Ed25519 key pair used both to sign and (converted) to agree.

Why one key and not separate Ed25519 + X25519 identities: the auth service
registers devices by their Ed25519 public key, and the safety number users
compare is computed over that same key. Converting it with libsodium's
``crypto_sign_ed25519_{pk,sk}_to_curve25519`` gives the X25519 form PQXDH needs
(DH1 and DH2) without a second identity that would need its own binding.
Using one key for EdDSA and X25519 is the same joint-security setting Signal's
XEdDSA relies on, just entered from the Edwards side.
"""

from __future__ import annotations

import nacl.bindings
import nacl.signing

from .encoding import Reader, Writer, check_length
from .errors import InvalidKeyError
from .primitives import (
    ED25519_SEED_SIZE,
    X25519PrivateKey,
    ed25519_public_to_x25519,
    x25519_private_from_bytes,
)

__all__ = ["IDENTITY_FORMAT_VERSION", "IdentityKeyPair"]

IDENTITY_FORMAT_VERSION = 1


class IdentityKeyPair:
    """A device's long-term Ed25519 key pair (private: keep in the device's key store)."""

    __slots__ = ("_signing", "_x25519_private", "public", "x25519_public")

    def __init__(self, seed: bytes) -> None:
        """Build from the 32-byte Ed25519 seed; prefer :meth:`generate` / :meth:`from_bytes`."""
        check_length("identity seed", seed, ED25519_SEED_SIZE)
        self._signing = nacl.signing.SigningKey(seed)
        self.public: bytes = bytes(self._signing.verify_key)
        # libsodium's secret-key form is seed || public (64 bytes).
        curve_sk = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(seed + self.public)
        self._x25519_private: X25519PrivateKey = x25519_private_from_bytes(bytes(curve_sk))
        self.x25519_public: bytes = ed25519_public_to_x25519(self.public)

    @classmethod
    def generate(cls) -> IdentityKeyPair:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    def sign(self, data: bytes) -> bytes:
        """Detached 64-byte Ed25519 signature of ``data``."""
        return bytes(self._signing.sign(data).signature)

    @property
    def x25519_private(self) -> X25519PrivateKey:
        """The X25519 form of the identity private key, for DH1/DH2 of PQXDH."""
        return self._x25519_private

    def to_bytes(self) -> bytes:
        """``version(1) || seed(32) || public(32)``; the public key guards against corruption."""
        return (
            Writer().u8(IDENTITY_FORMAT_VERSION).raw(bytes(self._signing)).raw(self.public).getvalue()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityKeyPair:
        reader = Reader(data, "identity")
        reader.version((IDENTITY_FORMAT_VERSION,))
        seed = reader.key(ED25519_SEED_SIZE, "seed")
        public = reader.key(32, "public key")
        reader.end()
        pair = cls(seed)
        if pair.public != public:
            raise InvalidKeyError("identity (seed does not match stored public key)")
        return pair

    def __repr__(self) -> str:
        return f"IdentityKeyPair(public={self.public.hex()[:16]}…)"
