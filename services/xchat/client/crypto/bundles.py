"""The prekey bundle an initiator fetches for a recipient device.

The SDK builds a :class:`PrekeyBundle` from the fields the server returns (or
parses :meth:`PrekeyBundle.from_bytes`); :meth:`PrekeyBundle.verify` checks every
signature against the bundle's identity key before PQXDH uses it and says which
one failed. Layout of version 1 (big-endian)::

    version u8 = 1
    identity_key 32                          Ed25519
    spk_id u32 || spk 32 || spk_sig 64       X25519 signed prekey (kind 1)
    has_opk u8 [|| opk_id u32 || opk 32]     optional X25519 one-time prekey
    pq_id u32 || last_resort u8 || pq 1184 || pq_sig 64   ML-KEM-768 (kind 2 or 3)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .encoding import Reader, Writer, check_length
from .errors import BundleSignatureError, MalformedMessageError, UnsupportedVersionError
from .prekeys import OneTimePrekey, PqPrekey, SignedPrekey
from .prekey_store import PrekeyStore
from .primitives import (
    ED25519_PUBLIC_KEY_SIZE,
    ED25519_SIGNATURE_SIZE,
    MLKEM768_PUBLIC_KEY_SIZE,
    X25519_KEY_SIZE,
    ed25519_public_to_x25519,
)

__all__ = ["BUNDLE_VERSION", "PrekeyBundle"]

BUNDLE_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class PrekeyBundle:
    """Public keys of one recipient device, as needed to start a PQXDH session."""

    identity_key: bytes
    signed_prekey: SignedPrekey
    pq_prekey: PqPrekey
    one_time_prekey: OneTimePrekey | None = None
    version: int = field(default=BUNDLE_VERSION)

    def __post_init__(self) -> None:
        if self.version != BUNDLE_VERSION:
            raise UnsupportedVersionError("bundle", self.version, (BUNDLE_VERSION,))
        check_length("bundle identity key", self.identity_key, ED25519_PUBLIC_KEY_SIZE)
        for name, value, cls in (
            ("signed_prekey", self.signed_prekey, SignedPrekey),
            ("pq_prekey", self.pq_prekey, PqPrekey),
        ):
            if not isinstance(value, cls):
                raise MalformedMessageError(f"bundle {name} must be a {cls.__name__}")
        if self.one_time_prekey is not None and not isinstance(self.one_time_prekey, OneTimePrekey):
            raise MalformedMessageError("bundle one_time_prekey must be a OneTimePrekey or None")

    def verify(self) -> None:
        """Raise :class:`BundleSignatureError` naming the first prekey whose signature fails.

        Also rejects an identity key that has no X25519 form (``InvalidKeyError``),
        since PQXDH could not use it.
        """
        if not self.signed_prekey.verify(self.identity_key):
            raise BundleSignatureError("signed_prekey", self.signed_prekey.key_id)
        if not self.pq_prekey.verify(self.identity_key):
            name = "last_resort_pq_prekey" if self.pq_prekey.last_resort else "pq_prekey"
            raise BundleSignatureError(name, self.pq_prekey.key_id)
        ed25519_public_to_x25519(self.identity_key, "bundle identity key")

    def to_bytes(self) -> bytes:
        w = Writer().u8(self.version).raw(self.identity_key)
        spk = self.signed_prekey
        w.u32(spk.key_id).raw(spk.public).raw(spk.signature)
        opk = self.one_time_prekey
        w.flag(opk is not None)
        if opk is not None:
            w.u32(opk.key_id).raw(opk.public)
        pq = self.pq_prekey
        w.u32(pq.key_id).flag(pq.last_resort).raw(pq.public).raw(pq.signature)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PrekeyBundle:
        """Parse (not verify) a bundle; call :meth:`verify` before use."""
        r = Reader(data, "bundle")
        r.version((BUNDLE_VERSION,))
        identity = r.key(ED25519_PUBLIC_KEY_SIZE, "identity key")
        spk = SignedPrekey(
            key_id=r.u32("signed prekey id"),
            public=r.key(X25519_KEY_SIZE, "signed prekey"),
            signature=r.key(ED25519_SIGNATURE_SIZE, "signed prekey signature"),
        )
        opk = None
        if r.flag("has_one_time_prekey"):
            opk = OneTimePrekey(
                key_id=r.u32("one-time prekey id"), public=r.key(X25519_KEY_SIZE, "one-time prekey")
            )
        pq_id = r.u32("PQ prekey id")
        last_resort = r.flag("last_resort")
        pq = PqPrekey(
            key_id=pq_id,
            public=r.key(MLKEM768_PUBLIC_KEY_SIZE, "PQ prekey"),
            signature=r.key(ED25519_SIGNATURE_SIZE, "PQ prekey signature"),
            last_resort=last_resort,
        )
        r.end()
        return cls(identity_key=identity, signed_prekey=spk, one_time_prekey=opk, pq_prekey=pq)

    @classmethod
    def from_store(
        cls, store: PrekeyStore, *, use_one_time: bool = True, use_pq_one_time: bool = True
    ) -> PrekeyBundle:
        """Build the bundle the server would hand out for ``store`` (tests, local tools).

        Picks the first available one-time prekeys; falls back to the
        last-resort PQ key when none are left (or ``use_pq_one_time`` is false).
        """
        public = store.public_prekeys()
        if public.signed_prekey is None:
            raise MalformedMessageError("store has no signed prekey")
        pq = public.pq_prekeys[0] if use_pq_one_time and public.pq_prekeys else None
        pq = pq or public.last_resort_pq_prekey
        if pq is None:
            raise MalformedMessageError("store has no PQ prekey")
        opk = public.one_time_prekeys[0] if use_one_time and public.one_time_prekeys else None
        return cls(
            identity_key=public.identity_key,
            signed_prekey=public.signed_prekey,
            one_time_prekey=opk,
            pq_prekey=pq,
        )
