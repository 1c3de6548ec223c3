"""The device-private side of prekeys: generation, rotation, consumption, persistence.

A :class:`PrekeyStore` belongs to one :class:`~.identity.IdentityKeyPair` (it
signs with it but does not serialise it). It hands out the public halves as
the frozen values of :mod:`.prekeys` for upload, and gives the responder side
of PQXDH (:mod:`.sessions`) the private halves by key id.

Rotation: generating a new signed prekey or last-resort PQ key retires the
previous one instead of deleting it, so an initial message composed against a
bundle fetched just before rotation still opens. :meth:`PrekeyStore.prune_retired`
deletes retired keys older than the grace period. One-time keys (classical and
PQ) are deleted only after the first message that used them decrypted
successfully; their ids are remembered (bounded) so a replayed initial message
is reported as a replay, not as an unknown key.

The store is mutable: persist it (:meth:`to_bytes`) after every change.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey

from .encoding import Reader, Writer
from .errors import IdentityMismatchError, MalformedMessageError, ReplayedMessageError, UnknownPrekeyError
from .identity import IdentityKeyPair
from .prekeys import MAX_KEY_ID, OneTimePrekey, PqPrekey, PrekeyKind, SignedPrekey, prekey_signature_message
from .primitives import (
    ED25519_SIGNATURE_SIZE,
    MLKEM768_SEED_SIZE,
    X25519_KEY_SIZE,
    X25519PrivateKey,
    mlkem_generate,
    mlkem_private_from_seed,
    mlkem_public_bytes,
    x25519_generate,
    x25519_private_bytes,
    x25519_private_from_bytes,
    x25519_public_bytes,
)

__all__ = ["PREKEY_GRACE_MS", "PREKEY_STORE_FORMAT_VERSION", "PrekeyStore", "PublicPrekeys"]

PREKEY_STORE_FORMAT_VERSION = 1
# How long a rotated-out signed / last-resort key still answers initial messages.
# Offline recipients can take days to fetch; 30 days follows Signal's practice.
PREKEY_GRACE_MS = 30 * 24 * 3600 * 1000
# Consumed one-time ids remembered for replay reporting (ids are 5 bytes each).
MAX_REMEMBERED_CONSUMED = 2000
# Batches beyond this are a caller bug (the server caps uploads far lower).
MAX_BATCH = 1000

_ONE_TIME_TAG = 0
_PQ_ONE_TIME_TAG = 1


def _now_ms(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else now_ms


@dataclass(frozen=True, slots=True)
class PublicPrekeys:
    """Everything a device uploads: the public halves, signatures included."""

    identity_key: bytes
    signed_prekey: SignedPrekey | None
    one_time_prekeys: tuple[OneTimePrekey, ...]
    pq_prekeys: tuple[PqPrekey, ...]
    last_resort_pq_prekey: PqPrekey | None


@dataclass(slots=True)
class _SignedEntry:
    private: bytes
    signature: bytes
    created_ms: int
    retired_ms: int  # 0 while current


@dataclass(slots=True)
class _PqEntry:
    seed: bytes
    signature: bytes
    last_resort: bool
    created_ms: int
    retired_ms: int  # 0 while current (or for one-time keys)


class PrekeyStore:
    """Private prekeys of one device identity."""

    def __init__(self, identity: IdentityKeyPair) -> None:
        self._identity = identity
        self._signed: dict[int, _SignedEntry] = {}
        self._one_time: dict[int, bytes] = {}
        self._pq: dict[int, _PqEntry] = {}
        self._next_signed_id = 1
        self._next_one_time_id = 1
        self._next_pq_id = 1
        self._consumed: deque[tuple[int, int]] = deque(maxlen=MAX_REMEMBERED_CONSUMED)

    @property
    def identity(self) -> IdentityKeyPair:
        return self._identity

    # --- generation -------------------------------------------------------------

    @staticmethod
    def _take_id(next_id: int) -> tuple[int, int]:
        # uint32 ids; wrapping past 2**32-1 restarts at 1 (0 is never issued).
        return next_id, (next_id % MAX_KEY_ID) + 1

    def generate_signed_prekey(self, *, now_ms: int | None = None) -> SignedPrekey:
        """Create a new current signed prekey; the previous one is retired (grace period)."""
        now = _now_ms(now_ms)
        for entry in self._signed.values():
            if entry.retired_ms == 0:
                entry.retired_ms = now
        key_id, self._next_signed_id = self._take_id(self._next_signed_id)
        private = x25519_generate()
        public = x25519_public_bytes(private)
        signature = self._identity.sign(
            prekey_signature_message(PrekeyKind.SIGNED_X25519, key_id, public)
        )
        self._signed[key_id] = _SignedEntry(x25519_private_bytes(private), signature, now, 0)
        return SignedPrekey(key_id=key_id, public=public, signature=signature)

    def generate_one_time_prekeys(self, n: int) -> tuple[OneTimePrekey, ...]:
        """Create ``n`` unsigned X25519 one-time prekeys."""
        _check_batch(n)
        out = []
        for _ in range(n):
            key_id, self._next_one_time_id = self._take_id(self._next_one_time_id)
            private = x25519_generate()
            self._one_time[key_id] = x25519_private_bytes(private)
            out.append(OneTimePrekey(key_id=key_id, public=x25519_public_bytes(private)))
        return tuple(out)

    def _new_pq(self, last_resort: bool, now: int) -> PqPrekey:
        key_id, self._next_pq_id = self._take_id(self._next_pq_id)
        private = mlkem_generate()
        public = mlkem_public_bytes(private)
        kind = PrekeyKind.LAST_RESORT_PQ_MLKEM768 if last_resort else PrekeyKind.PQ_MLKEM768
        signature = self._identity.sign(prekey_signature_message(kind, key_id, public))
        self._pq[key_id] = _PqEntry(private.private_bytes_raw(), signature, last_resort, now, 0)
        return PqPrekey(key_id=key_id, public=public, signature=signature, last_resort=last_resort)

    def generate_pq_prekeys(self, n: int) -> tuple[PqPrekey, ...]:
        """Create ``n`` signed one-time ML-KEM-768 prekeys (kind 2)."""
        _check_batch(n)
        now = _now_ms(None)
        return tuple(self._new_pq(False, now) for _ in range(n))

    def generate_last_resort_pq(self, *, now_ms: int | None = None) -> PqPrekey:
        """Create a new last-resort PQ key (kind 3); the previous one is retired."""
        now = _now_ms(now_ms)
        for entry in self._pq.values():
            if entry.last_resort and entry.retired_ms == 0:
                entry.retired_ms = now
        return self._new_pq(True, now)

    def mark_published(self, *, now_ms: int | None = None) -> None:
        """The current signed and last-resort keys reached the directory only now.

        The keys they replaced were served until now, so their grace period
        starts now (not when the new keys were generated: an upload can come
        days later, e.g. after a crash or offline).
        """
        now = _now_ms(now_ms)
        latest_signed = max((e for e in self._signed.values() if e.retired_ms), key=lambda e: e.retired_ms, default=None)
        if latest_signed is not None:
            latest_signed.retired_ms = max(latest_signed.retired_ms, now)
        retired_pq = (e for e in self._pq.values() if e.last_resort and e.retired_ms)
        latest_pq = max(retired_pq, key=lambda e: e.retired_ms, default=None)
        if latest_pq is not None:
            latest_pq.retired_ms = max(latest_pq.retired_ms, now)

    def prune_retired(self, *, now_ms: int | None = None, grace_ms: int = PREKEY_GRACE_MS) -> int:
        """Delete retired signed / last-resort keys older than ``grace_ms``; return how many."""
        cutoff = _now_ms(now_ms) - grace_ms
        old_signed = [k for k, e in self._signed.items() if 0 < e.retired_ms <= cutoff]
        old_pq = [k for k, e in self._pq.items() if e.last_resort and 0 < e.retired_ms <= cutoff]
        for key_id in old_signed:
            del self._signed[key_id]
        for key_id in old_pq:
            del self._pq[key_id]
        return len(old_signed) + len(old_pq)

    # --- public material ----------------------------------------------------------

    def public_prekeys(self) -> PublicPrekeys:
        """The current upload material (retired keys are not advertised)."""
        signed = None
        for key_id, entry in self._signed.items():
            if entry.retired_ms == 0:
                public = x25519_public_bytes(x25519_private_from_bytes(entry.private))
                signed = SignedPrekey(key_id=key_id, public=public, signature=entry.signature)
        one_time = tuple(
            OneTimePrekey(key_id=k, public=x25519_public_bytes(x25519_private_from_bytes(v)))
            for k, v in self._one_time.items()
        )
        pq: list[PqPrekey] = []
        last_resort = None
        for key_id, pq_entry in self._pq.items():
            if pq_entry.retired_ms:
                continue
            value = PqPrekey(
                key_id=key_id,
                public=mlkem_public_bytes(mlkem_private_from_seed(pq_entry.seed)),
                signature=pq_entry.signature,
                last_resort=pq_entry.last_resort,
            )
            if pq_entry.last_resort:
                last_resort = value
            else:
                pq.append(value)
        return PublicPrekeys(
            identity_key=self._identity.public,
            signed_prekey=signed,
            one_time_prekeys=one_time,
            pq_prekeys=tuple(pq),
            last_resort_pq_prekey=last_resort,
        )

    # --- responder access (used by sessions) -----------------------------------

    def signed_prekey_private(self, key_id: int) -> X25519PrivateKey:
        entry = self._signed.get(key_id)
        if entry is None:
            raise UnknownPrekeyError("signed_prekey", key_id)
        return x25519_private_from_bytes(entry.private)

    def one_time_prekey_private(self, key_id: int) -> X25519PrivateKey:
        private = self._one_time.get(key_id)
        if private is None:
            if (_ONE_TIME_TAG, key_id) in self._consumed:
                raise ReplayedMessageError(f"one-time prekey {key_id} was already used")
            raise UnknownPrekeyError("one_time_prekey", key_id)
        return x25519_private_from_bytes(private)

    def pq_prekey_private(self, key_id: int, *, last_resort: bool) -> MLKEM768PrivateKey:
        entry = self._pq.get(key_id)
        if entry is None or entry.last_resort != last_resort:
            if not last_resort and (_PQ_ONE_TIME_TAG, key_id) in self._consumed:
                raise ReplayedMessageError(f"one-time PQ prekey {key_id} was already used")
            kind = "last_resort_pq_prekey" if last_resort else "pq_prekey"
            raise UnknownPrekeyError(kind, key_id)
        return mlkem_private_from_seed(entry.seed)

    def consume(self, *, one_time_id: int | None, pq_id: int | None, pq_last_resort: bool) -> None:
        """Delete the one-time keys an initial message used (call only after it decrypted)."""
        if one_time_id is not None and self._one_time.pop(one_time_id, None) is not None:
            self._consumed.append((_ONE_TIME_TAG, one_time_id))
        if pq_id is not None and not pq_last_resort and self._pq.pop(pq_id, None) is not None:
            self._consumed.append((_PQ_ONE_TIME_TAG, pq_id))

    # --- persistence --------------------------------------------------------------

    def to_bytes(self) -> bytes:
        w = Writer().u8(PREKEY_STORE_FORMAT_VERSION).raw(self._identity.public)
        w.u32(self._next_signed_id).u32(self._next_one_time_id).u32(self._next_pq_id)
        w.u32(len(self._signed))
        for key_id, s in self._signed.items():
            w.u32(key_id).raw(s.private).raw(s.signature).u64(s.created_ms).u64(s.retired_ms)
        w.u32(len(self._one_time))
        for key_id, private in self._one_time.items():
            w.u32(key_id).raw(private)
        w.u32(len(self._pq))
        for key_id, p in self._pq.items():
            w.u32(key_id).flag(p.last_resort).raw(p.seed).raw(p.signature)
            w.u64(p.created_ms).u64(p.retired_ms)
        w.u32(len(self._consumed))
        for tag, key_id in self._consumed:
            w.u8(tag).u32(key_id)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, identity: IdentityKeyPair) -> PrekeyStore:
        """Restore a store; ``identity`` must be the key pair it was created with."""
        r = Reader(data, "prekey store")
        r.version((PREKEY_STORE_FORMAT_VERSION,))
        if r.key(32, "identity key") != identity.public:
            raise IdentityMismatchError("prekey store belongs to another identity key")
        store = cls(identity)
        store._next_signed_id, store._next_one_time_id, store._next_pq_id = r.u32(), r.u32(), r.u32()
        for _ in range(r.u32("signed count")):
            key_id = r.u32()
            store._signed[key_id] = _SignedEntry(
                r.key(X25519_KEY_SIZE, "signed prekey"),
                r.key(ED25519_SIGNATURE_SIZE, "signature"),
                r.u64(),
                r.u64(),
            )
        for _ in range(r.u32("one-time count")):
            key_id = r.u32()
            store._one_time[key_id] = r.key(X25519_KEY_SIZE, "one-time prekey")
        for _ in range(r.u32("pq count")):
            key_id = r.u32()
            last_resort = r.flag("last_resort")
            store._pq[key_id] = _PqEntry(
                r.key(MLKEM768_SEED_SIZE, "PQ seed"),
                r.key(ED25519_SIGNATURE_SIZE, "signature"),
                last_resort,
                r.u64(),
                r.u64(),
            )
        for _ in range(r.u32("consumed count")):
            store._consumed.append((r.u8(), r.u32()))
        r.end()
        return store


def _check_batch(n: int) -> None:
    if not isinstance(n, int) or not 0 <= n <= MAX_BATCH:
        raise MalformedMessageError(f"batch size must be 0..{MAX_BATCH}, got {n!r}")
