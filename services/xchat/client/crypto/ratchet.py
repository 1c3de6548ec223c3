"""The Double Ratchet (Signal's published specification), without header encryption.

Functions follow the spec's pseudocode names so the two can be read side by side:

* ``KDF_RK(rk, dh_out)`` = HKDF-SHA256(salt = rk, ikm = dh_out, info = RK_INFO) → 64 bytes,
  split into (new root key, new chain key).
* ``KDF_CK(ck)`` = (HMAC-SHA256(ck, 0x02) as next chain key, HMAC-SHA256(ck, 0x01) as
  message key).
* ``ENCRYPT(mk, pt, ad)`` = AES-256-GCM with key and nonce from HKDF(mk) (see
  :mod:`.primitives`).

Headers travel in clear (``HEADER(dh, pn, n)``, 40 bytes) but are authenticated:
the associated data is the PQXDH ``AD`` followed by every wire byte in front of
the ciphertext, header included (the spec's ``CONCAT(AD, header)``).

Decryption is transactional: :func:`ratchet_decrypt` returns the plaintext and
a ``commit`` callable, and changes the state only when the caller commits
(after the AEAD verified and the payload parsed), so a forged or corrupted
message leaves the session exactly as it was. The common case (the next
message of the current receiving chain) is computed on locals and committed
as two field writes; only a message that skips keys or steps the DH ratchet
works on a copy of the state (issue 18: copying every message's state cost
~37 % of a receiving app's CPU).

Bounds: at most :data:`MAX_SKIP` keys are skipped in one chain per message
(a gap left by a sender whose envelopes a full mailbox refused for a while
still opens; a forged header costs at most ~17 ms of HMACs on a 2-core machine), at most :data:`MAX_SKIPPED_KEYS` are stored in
total (oldest evicted first; a longer skip stores only its newest keys), and
a stored key is deleted :data:`SKIPPED_KEY_TTL_MS` after it was derived. A gap
beyond the bound is reported and healed by the SDK's session reset.

Order (issue 10, ADR 0018): ``skipped`` holds a key for every message of the
session skipped over and not received yet, in position order. Given a
``gap_window_ms``, ``commit()`` returns the message's :class:`Gaps`: its slot
and its *missing predecessors* skipped within that window (a predecessor
skipped longer ago is given up: the receiver waited for it once already). The
next message of the current chain with no recent skipped keys returns None,
so the common case costs one emptiness check.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .encoding import Reader, Writer, check_length
from .errors import (
    NoSessionError,
    ReplayedMessageError,
    TamperedMessageError,
    TooManySkippedMessagesError,
)
from .primitives import (
    X25519_KEY_SIZE,
    X25519PrivateKey,
    aead_decrypt,
    aead_encrypt,
    hkdf_sha256,
    hmac_sha256,
    x25519,
    x25519_generate,
    x25519_private_bytes,
    x25519_private_from_bytes,
    x25519_public_bytes,
)

__all__ = [
    "HEADER_SIZE",
    "MAX_SKIP",
    "MAX_SKIPPED_KEYS",
    "RK_INFO",
    "SKIPPED_KEY_TTL_MS",
    "Gaps",
    "Header",
    "RatchetState",
    "Slot",
    "kdf_ck",
    "kdf_rk",
    "ratchet_decrypt",
    "ratchet_encrypt",
    "ratchet_init_initiator",
    "ratchet_init_responder",
]

RK_INFO = b"xchat_DR_root_ratchet"
# Per-chain skip bound: a sender whose envelopes a full mailbox refused for a
# while (and dropped) is still read after a gap of this many messages (was
# 1,000); a forged header costs at most this many HMAC pairs (~17 ms measured
# on a 2-core machine). A longer gap is healed by the SDK's session reset.
MAX_SKIP = 5_000
# Total stored skipped keys across chains (each 76 bytes serialised: at most
# ~380 KB per session); at least MAX_SKIP, so every key one skip derives is kept.
MAX_SKIPPED_KEYS = 5_000
# A skipped key older than this is deleted: longer than the mailbox keeps an
# envelope (14 days by default), so any envelope still deliverable opens.
SKIPPED_KEY_TTL_MS = 30 * 24 * 3600 * 1000
# Remote ratchet keys remembered so a replay from an old chain is reported as such.
MAX_PREVIOUS_CHAINS = 32
_UINT32_MAX = 0xFFFFFFFF
HEADER_SIZE = X25519_KEY_SIZE + 4 + 4


def kdf_rk(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    okm = hkdf_sha256(dh_out, salt=rk, info=RK_INFO, length=64)
    return okm[:32], okm[32:]


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """Return ``(next_chain_key, message_key)``."""
    return hmac_sha256(ck, b"\x02"), hmac_sha256(ck, b"\x01")


# A message's position in a session: (sender's ratchet key, n).
Slot = tuple[bytes, int]


@dataclass(frozen=True, slots=True)
class Gaps:
    """What one committed message says about the order of its session.

    ``missing``: the predecessors not received yet (skipped within the window
    given to :func:`ratchet_decrypt`), oldest first; ``newest_ms``: when the
    newest of them was skipped (0: none). ``filled``: the message was
    decrypted from a stored skipped key, i.e. it was itself a missing
    predecessor of what came after it.
    """

    slot: Slot
    filled: bool
    missing: tuple[Slot, ...]
    newest_ms: int


@dataclass(frozen=True, slots=True)
class Header:
    """``HEADER(dh_pair, pn, n)``: sender's ratchet public key, previous chain length, index."""

    dh: bytes
    pn: int
    n: int

    def to_bytes(self) -> bytes:
        return self.dh + self.pn.to_bytes(4, "big") + self.n.to_bytes(4, "big")

    @classmethod
    def read(cls, r: Reader) -> Header:
        return cls(dh=r.key(X25519_KEY_SIZE, "ratchet key"), pn=r.u32("pn"), n=r.u32("n"))


@dataclass(slots=True)
class RatchetState:
    """The spec's ``state`` record. Mutable; copy before speculative changes."""

    dhs: X25519PrivateKey
    dhs_public: bytes
    dhr: bytes | None
    rk: bytes
    cks: bytes | None
    ckr: bytes | None
    ns: int
    nr: int
    pn: int
    # (ratchet key, n) -> (message key, ms when derived); insertion order is age order.
    skipped: OrderedDict[tuple[bytes, int], tuple[bytes, int]]
    previous_dhr: list[bytes]

    def copy(self) -> RatchetState:
        return RatchetState(
            self.dhs,  # key objects are immutable; replaced, never mutated
            self.dhs_public,
            self.dhr,
            self.rk,
            self.cks,
            self.ckr,
            self.ns,
            self.nr,
            self.pn,
            OrderedDict(self.skipped),
            list(self.previous_dhr),
        )

    def assign(self, other: RatchetState) -> None:
        """Takes every field of ``other`` (commits a speculative copy in place)."""
        for name in self.__slots__:
            setattr(self, name, getattr(other, name))

    def write(self, w: Writer) -> None:
        w.raw(x25519_private_bytes(self.dhs))
        w.flag(self.dhr is not None).raw(self.dhr or b"")
        w.raw(self.rk)
        w.flag(self.cks is not None).raw(self.cks or b"")
        w.flag(self.ckr is not None).raw(self.ckr or b"")
        w.u32(self.ns).u32(self.nr).u32(self.pn)
        w.u8(len(self.previous_dhr))
        for key in self.previous_dhr:
            w.raw(key)
        w.u32(len(self.skipped))
        for (dh, n), (mk, stored_ms) in self.skipped.items():
            w.raw(dh).u32(n).raw(mk).u64(stored_ms)

    @classmethod
    def read(cls, r: Reader, *, timed: bool = True) -> RatchetState:
        """Reads what ``write`` wrote; ``timed=False`` reads the untimed skipped keys of
        session format 1 (dated now: their time-to-live starts when first read)."""
        dhs = x25519_private_from_bytes(r.key(32, "DHs"))
        dhr = r.key(32, "DHr") if r.flag("has DHr") else None
        rk = r.key(32, "RK")
        cks = r.key(32, "CKs") if r.flag("has CKs") else None
        ckr = r.key(32, "CKr") if r.flag("has CKr") else None
        ns, nr, pn = r.u32("Ns"), r.u32("Nr"), r.u32("PN")
        previous = [r.key(32, "previous DHr") for _ in range(r.u8("previous count"))]
        skipped: OrderedDict[tuple[bytes, int], tuple[bytes, int]] = OrderedDict()
        now = _now_ms()
        for _ in range(r.u32("skipped count")):
            dh = r.key(32, "skipped DH")
            n = r.u32("skipped n")
            mk = r.key(32, "skipped key")
            skipped[(dh, n)] = (mk, r.u64("skipped key time") if timed else now)
        return cls(
            dhs, x25519_public_bytes(dhs), dhr, rk, cks, ckr, ns, nr, pn, skipped, previous
        )


def _new_state(rk: bytes, dhs: X25519PrivateKey) -> RatchetState:
    return RatchetState(
        dhs, x25519_public_bytes(dhs), None, rk, None, None, 0, 0, 0, OrderedDict(), []
    )


def ratchet_init_initiator(sk: bytes, their_ratchet_public: bytes) -> RatchetState:
    """``RatchetInitAlice``: first DHr is the responder's signed prekey."""
    check_length("shared key", sk, 32)
    state = _new_state(sk, x25519_generate())
    state.dhr = their_ratchet_public
    state.rk, state.cks = kdf_rk(sk, x25519(state.dhs, their_ratchet_public, "signed prekey"))
    return state


def ratchet_init_responder(sk: bytes, our_ratchet_private: X25519PrivateKey) -> RatchetState:
    """``RatchetInitBob``: first DHs is the signed prekey pair; no chains yet."""
    check_length("shared key", sk, 32)
    return _new_state(sk, our_ratchet_private)


def ratchet_encrypt(state: RatchetState, plaintext: bytes, *, ad: bytes, frame: bytes) -> bytes:
    """``RatchetEncrypt``; returns ``frame || header || AEAD(mk, plaintext, ad || frame || header)``.

    Mutates ``state`` (encryption cannot fail after the chain step).
    """
    if state.cks is None:
        # Only a responder that has not yet received anything lacks a sending
        # chain, and sessions never create one in that condition.
        raise NoSessionError("no sending chain yet")
    state.cks, mk = kdf_ck(state.cks)
    header = Header(state.dhs_public, state.pn, state.ns).to_bytes()
    state.ns += 1
    prefix = frame + header
    return prefix + aead_encrypt(mk, plaintext, ad + prefix)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _expire(state: RatchetState, now_ms: int) -> None:
    """Deletes stored skipped keys past their time-to-live (the oldest come first)."""
    skipped = state.skipped
    deadline = now_ms - SKIPPED_KEY_TTL_MS
    while skipped and next(iter(skipped.values()))[1] < deadline:
        skipped.popitem(last=False)


def _recent(skipped: OrderedDict[Slot, tuple[bytes, int]], since_ms: int) -> tuple[tuple[Slot, ...], int]:
    """Every stored slot skipped at or after ``since_ms``, oldest first, and the newest time.

    Insertion order is age order, so the recent ones are a suffix: walked from
    the end, it stops at the first older key.
    """
    recent: list[Slot] = []
    newest = 0
    for slot in reversed(skipped):
        stored_ms = skipped[slot][1]
        if stored_ms < since_ms:
            break
        newest = max(newest, stored_ms)
        recent.append(slot)
    recent.reverse()
    return tuple(recent), newest


def _before(skipped: OrderedDict[Slot, tuple[bytes, int]], slot: Slot, since_ms: int) -> tuple[tuple[Slot, ...], int]:
    """The stored slots ahead of ``slot`` (its predecessors) skipped at or after ``since_ms``."""
    missing: list[Slot] = []
    newest = 0
    for key, (_mk, stored_ms) in skipped.items():
        if key == slot:
            break
        if stored_ms >= since_ms:
            newest = max(newest, stored_ms)
            missing.append(key)
    return tuple(missing), newest


def _gaps(skipped: OrderedDict[Slot, tuple[bytes, int]], slot: Slot, since_ms: int) -> Gaps | None:
    """For a message decrypted with a chain key: every recent skipped slot precedes it."""
    if not skipped:
        return None
    missing, newest = _recent(skipped, since_ms)
    return Gaps(slot, False, missing, newest) if missing else None


def _skip_message_keys(state: RatchetState, until: int, now_ms: int, max_skip: int = MAX_SKIP) -> None:
    if until - state.nr > max_skip:
        raise TooManySkippedMessagesError(until - state.nr, max_skip)
    if state.ckr is None or state.dhr is None:
        return
    ckr = state.ckr
    # Keys that would be evicted at once are derived but never stored.
    keep_from = until - MAX_SKIPPED_KEYS
    while state.nr < until:
        ckr, mk = kdf_ck(ckr)
        if state.nr >= keep_from:
            state.skipped[(state.dhr, state.nr)] = (mk, now_ms)
        state.nr += 1
    state.ckr = ckr
    while len(state.skipped) > MAX_SKIPPED_KEYS:
        state.skipped.popitem(last=False)


def _dh_ratchet(state: RatchetState, header: Header) -> None:
    if state.dhr is not None:
        state.previous_dhr.append(state.dhr)
        del state.previous_dhr[:-MAX_PREVIOUS_CHAINS]
    state.pn = state.ns
    state.ns = 0
    state.nr = 0
    state.dhr = header.dh
    state.rk, state.ckr = kdf_rk(state.rk, x25519(state.dhs, header.dh, "ratchet key"))
    state.dhs = x25519_generate()
    state.dhs_public = x25519_public_bytes(state.dhs)
    state.rk, state.cks = kdf_rk(state.rk, x25519(state.dhs, header.dh, "ratchet key"))


def ratchet_decrypt(
    state: RatchetState,
    header: Header,
    ciphertext: bytes,
    *,
    aad: bytes,
    now_ms: int | None = None,
    max_skip: int = MAX_SKIP,
    gap_window_ms: int = 0,
) -> tuple[bytes, Callable[[], Gaps | None]]:
    """``RatchetDecrypt`` without touching ``state``: returns ``(plaintext, commit)``.

    ``commit()`` applies the step to ``state``; never calling it leaves the
    state as it was (the caller commits once the plaintext is accepted).
    ``aad`` is the full associated data (PQXDH AD || frame || header);
    ``now_ms`` (default: the clock) dates skipped keys and expires old ones;
    ``max_skip`` (at most :data:`MAX_SKIP`) lowers the skip bound, for trial
    decryptions under archived sessions. ``gap_window_ms`` > 0: ``commit()``
    returns the message's :class:`Gaps` (None: nothing skipped within that
    window precedes it, and it filled no gap); 0: it always returns None.
    """
    now = _now_ms() if now_ms is None else now_ms
    since = now - gap_window_ms if gap_window_ms > 0 else None
    slot = (header.dh, header.n)
    stored = state.skipped.get(slot)
    if stored is not None and stored[1] >= now - SKIPPED_KEY_TTL_MS:
        plaintext = aead_decrypt(stored[0], ciphertext, aad)

        def commit_skipped() -> Gaps | None:
            gaps = None
            if since is not None:
                missing, newest = _before(state.skipped, slot, since)
                gaps = Gaps(slot, True, missing, newest)
            state.skipped.pop(slot, None)
            return gaps

        return plaintext, commit_skipped
    if header.dh == state.dhr and header.n == state.nr and state.ckr is not None and stored is None:
        # The common case: the next message of the current receiving chain.
        # Computed on locals; nothing copied (see the module docstring).
        if header.n >= _UINT32_MAX:
            raise TooManySkippedMessagesError(header.n + 1, _UINT32_MAX)
        ckr, mk = kdf_ck(state.ckr)
        plaintext = aead_decrypt(mk, ciphertext, aad)

        def commit_next() -> Gaps | None:
            state.ckr = ckr
            state.nr = header.n + 1
            if state.skipped:
                _expire(state, now)
                if since is not None:
                    return _gaps(state.skipped, slot, since)
            return None

        return plaintext, commit_next
    new = state.copy()
    if stored is not None:
        del new.skipped[slot]  # expired: never used again
    _expire(new, now)
    if header.dh != new.dhr:
        if header.dh in new.previous_dhr:
            raise ReplayedMessageError("message key of an earlier chain is no longer held")
        _skip_message_keys(new, header.pn, now, max_skip)
        _dh_ratchet(new, header)
    elif header.n < new.nr:
        raise ReplayedMessageError(f"message key {header.n} was already used")
    if new.ckr is None:
        # Only the initiator's first DHr (the responder's signed prekey) has no
        # receiving chain; the responder never sends under it, so this is forged.
        raise TamperedMessageError("no receiving chain for this ratchet key")
    _skip_message_keys(new, header.n, now, max_skip)
    new.ckr, mk = kdf_ck(new.ckr)
    new.nr += 1
    if new.nr > _UINT32_MAX:
        raise TooManySkippedMessagesError(new.nr, _UINT32_MAX)
    plaintext = aead_decrypt(mk, ciphertext, aad)

    def commit_copy() -> Gaps | None:
        state.assign(new)
        return _gaps(state.skipped, slot, since) if since is not None else None

    return plaintext, commit_copy
