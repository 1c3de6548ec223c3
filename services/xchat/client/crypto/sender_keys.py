"""Sender Keys: one symmetric chain per (group, sender device), signed (docs/adr/0015).

A group member's device encrypts a group message once, under its own sender
key, and the same ciphertext goes to every member device. The sender key is

* a **chain key**, ratcheted per message exactly like the Double Ratchet's
  symmetric chain: ``message_key = HMAC-SHA256(ck, 0x01)``,
  ``next_ck = HMAC-SHA256(ck, 0x02)``; a used message key is deleted, so an
  old chain key (not kept) cannot be recovered from a new one;
* an **Ed25519 signing key**: every member holds the chain key (they must
  decrypt), so the chain alone would let any member forge another member's
  messages; the signature, whose private half only the sender holds, stops that.

The sender hands ``distribution()`` (chain key at its *current* iteration, key
id, signing public key) to each member device over the pairwise sessions; a
member added later gets the chain from that point on and cannot derive the
message keys of earlier messages.

Wire (``SenderKeyMessage``)::

    version(1)=1 || group_id(16) || key_id u32 || iteration u32
    || u8 len || sender account || u8 len || sender device
    || AES-256-GCM(message_key, plaintext, ad = everything before) || Ed25519 signature(64)

The signature covers every byte before it. Distribution::

    version(1)=1 || group_id(16) || key_id u32 || iteration u32 || chain_key(32) || signing public(32)

Out of order: a receiver derives and keeps the keys of skipped iterations, at
most ``MAX_SENDER_KEY_SKIP`` ahead per message and ``MAX_SENDER_KEY_SKIPPED`` kept
(oldest dropped). Decryption works on copies and changes the state only once
the signature and the AEAD verified, so a forged or replayed message costs
nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import nacl.signing

from .encoding import Reader, Writer, check_length
from .errors import (
    DecryptionError,
    MalformedMessageError,
    ReplayedMessageError,
    TooManySkippedMessagesError,
)
from .primitives import (
    ED25519_PUBLIC_KEY_SIZE,
    ED25519_SEED_SIZE,
    ED25519_SIGNATURE_SIZE,
    aead_decrypt,
    aead_encrypt,
    ed25519_verify,
    hmac_sha256,
)

__all__ = [
    "GROUP_ID_SIZE",
    "MAX_SENDER_KEY_SKIP",
    "MAX_SENDER_KEY_SKIPPED",
    "ReceivedSenderKey",
    "SenderKey",
    "SenderKeyHeader",
    "SenderKeySignatureError",
    "parse_header",
]

SENDER_KEY_VERSION = 1
GROUP_ID_SIZE = 16
CHAIN_KEY_SIZE = 32
# One message may skip at most this many iterations (Signal's bound too): a
# sender whose messages were lost in bulk still gets through, a hostile header
# cannot make us derive millions of keys.
MAX_SENDER_KEY_SKIP = 2000
# Skipped keys kept per sender key (32 bytes + 4 each): oldest dropped beyond.
MAX_SENDER_KEY_SKIPPED = 2000
_MESSAGE_KEY_SEED = b"\x01"
_CHAIN_KEY_SEED = b"\x02"
_NAME_MAX = 255


class SenderKeySignatureError(DecryptionError):
    """A sender-key message whose signature is not the sender key's: a forgery (e.g. by
    another member, who holds the chain key but not the signing key)."""


def _step(chain_key: bytes) -> tuple[bytes, bytes]:
    """(next chain key, message key) — the Double Ratchet's KDF_CK."""
    return hmac_sha256(chain_key, _CHAIN_KEY_SEED), hmac_sha256(chain_key, _MESSAGE_KEY_SEED)


@dataclass(frozen=True, slots=True)
class SenderKeyHeader:
    group_id: bytes
    key_id: int
    iteration: int
    sender_account: str
    sender_device: str


def _name(reader: Reader, field: str) -> str:
    raw = reader.take(reader.u8(field), field)
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessageError(f"sender key message: {field} is not UTF-8") from exc
    if not value:
        raise MalformedMessageError(f"sender key message: empty {field}")
    return value


def _parse(wire: bytes) -> tuple[SenderKeyHeader, bytes, bytes, bytes]:
    """(header, header bytes (the AEAD's associated data), AEAD ciphertext, signature)."""
    if len(wire) < ED25519_SIGNATURE_SIZE:
        raise MalformedMessageError("sender key message: truncated")
    signed, signature = wire[:-ED25519_SIGNATURE_SIZE], wire[-ED25519_SIGNATURE_SIZE:]
    reader = Reader(signed, "sender key message")
    reader.version((SENDER_KEY_VERSION,))
    group_id = reader.key(GROUP_ID_SIZE, "group id")
    key_id, iteration = reader.u32("key id"), reader.u32("iteration")
    account, device = _name(reader, "sender account"), _name(reader, "sender device")
    header_size = reader.position
    ciphertext = reader.rest()
    return SenderKeyHeader(group_id, key_id, iteration, account, device), signed[:header_size], ciphertext, signature


def parse_header(wire: bytes) -> SenderKeyHeader:
    """Who claims to have sent ``wire`` and under which key (unauthenticated until decrypted)."""
    return _parse(wire)[0]


class SenderKey:
    """Our own sending chain for one group (keep it secret: it reads every later message)."""

    __slots__ = ("chain_key", "group_id", "iteration", "key_id", "_signing")

    def __init__(self, *, group_id: bytes, key_id: int, chain_key: bytes, signing_seed: bytes, iteration: int = 0) -> None:
        self.group_id = check_length("group id", group_id, GROUP_ID_SIZE)
        self.key_id = key_id
        self.chain_key = check_length("chain key", chain_key, CHAIN_KEY_SIZE)
        self._signing = nacl.signing.SigningKey(check_length("signing seed", signing_seed, ED25519_SEED_SIZE))
        self.iteration = iteration

    @classmethod
    def generate(cls, group_id: bytes) -> SenderKey:
        return cls(
            group_id=group_id,
            key_id=int.from_bytes(os.urandom(4), "big"),
            chain_key=os.urandom(CHAIN_KEY_SIZE),
            signing_seed=os.urandom(ED25519_SEED_SIZE),
        )

    @property
    def signing_public(self) -> bytes:
        return bytes(self._signing.verify_key)

    def distribution(self) -> bytes:
        """What members need to read our messages from the current iteration on."""
        return (
            Writer()
            .u8(SENDER_KEY_VERSION)
            .raw(self.group_id)
            .u32(self.key_id)
            .u32(self.iteration)
            .raw(self.chain_key)
            .raw(self.signing_public)
            .getvalue()
        )

    def encrypt(self, *, sender_account: str, sender_device: str, plaintext: bytes) -> bytes:
        """One message; advances the chain (persist the key before the ciphertext leaves)."""
        account, device = sender_account.encode(), sender_device.encode()
        if not 0 < len(account) <= _NAME_MAX or not 0 < len(device) <= _NAME_MAX:
            raise MalformedMessageError("sender key message: sender account and device must be 1-255 bytes")
        if self.iteration >= 2**32 - 1:
            raise MalformedMessageError("sender key exhausted: generate a new one")
        header = (
            Writer()
            .u8(SENDER_KEY_VERSION)
            .raw(self.group_id)
            .u32(self.key_id)
            .u32(self.iteration)
            .u8(len(account))
            .raw(account)
            .u8(len(device))
            .raw(device)
            .getvalue()
        )
        next_chain, message_key = _step(self.chain_key)
        signed = header + aead_encrypt(message_key, plaintext, header)
        self.chain_key, self.iteration = next_chain, self.iteration + 1
        return signed + bytes(self._signing.sign(signed).signature)

    def to_bytes(self) -> bytes:
        return (
            Writer()
            .u8(SENDER_KEY_VERSION)
            .raw(self.group_id)
            .u32(self.key_id)
            .u32(self.iteration)
            .raw(self.chain_key)
            .raw(bytes(self._signing))
            .getvalue()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKey:
        reader = Reader(data, "sender key")
        reader.version((SENDER_KEY_VERSION,))
        group_id = reader.key(GROUP_ID_SIZE, "group id")
        key_id, iteration = reader.u32("key id"), reader.u32("iteration")
        chain_key = reader.key(CHAIN_KEY_SIZE, "chain key")
        seed = reader.key(ED25519_SEED_SIZE, "signing seed")
        reader.end()
        return cls(group_id=group_id, key_id=key_id, chain_key=chain_key, signing_seed=seed, iteration=iteration)


class ReceivedSenderKey:
    """Another device's sender key for one group, as its distribution gave it."""

    __slots__ = ("chain_key", "group_id", "iteration", "key_id", "signing_public", "skipped")

    def __init__(
        self,
        *,
        group_id: bytes,
        key_id: int,
        iteration: int,
        chain_key: bytes,
        signing_public: bytes,
        skipped: dict[int, bytes] | None = None,
    ) -> None:
        self.group_id = check_length("group id", group_id, GROUP_ID_SIZE)
        self.key_id = key_id
        self.iteration = iteration
        self.chain_key = check_length("chain key", chain_key, CHAIN_KEY_SIZE)
        self.signing_public = check_length("signing key", signing_public, ED25519_PUBLIC_KEY_SIZE)
        self.skipped: dict[int, bytes] = dict(skipped or {})

    @classmethod
    def from_distribution(cls, data: bytes) -> ReceivedSenderKey:
        reader = Reader(data, "sender key distribution")
        reader.version((SENDER_KEY_VERSION,))
        group_id = reader.key(GROUP_ID_SIZE, "group id")
        key_id, iteration = reader.u32("key id"), reader.u32("iteration")
        chain_key = reader.key(CHAIN_KEY_SIZE, "chain key")
        public = reader.key(ED25519_PUBLIC_KEY_SIZE, "signing key")
        reader.end()
        return cls(group_id=group_id, key_id=key_id, iteration=iteration, chain_key=chain_key, signing_public=public)

    def decrypt(self, wire: bytes) -> tuple[SenderKeyHeader, bytes]:
        """(header, plaintext); the state changes only when the message verified and decrypted."""
        header, header_bytes, ciphertext, signature = _parse(wire)
        if header.group_id != self.group_id or header.key_id != self.key_id:
            raise DecryptionError("sender key message under another group or key id")
        # The signature first: a member holding the chain key cannot forge it.
        if not ed25519_verify(self.signing_public, wire[: len(wire) - ED25519_SIGNATURE_SIZE], signature):
            raise SenderKeySignatureError("sender key message signature does not verify")
        chain, iteration, skipped = self.chain_key, self.iteration, dict(self.skipped)
        if header.iteration < iteration:
            message_key = skipped.pop(header.iteration, None)
            if message_key is None:
                raise ReplayedMessageError("sender key message already read (or its key expired)")
        else:
            ahead = header.iteration - iteration
            if ahead > MAX_SENDER_KEY_SKIP:
                raise TooManySkippedMessagesError(ahead, MAX_SENDER_KEY_SKIP)
            while iteration < header.iteration:
                chain, skipped_key = _step(chain)
                skipped[iteration] = skipped_key
                iteration += 1
            chain, message_key = _step(chain)
            iteration += 1
            while len(skipped) > MAX_SENDER_KEY_SKIPPED:
                del skipped[min(skipped)]
        plaintext = aead_decrypt(message_key, ciphertext, header_bytes)  # TamperedMessageError
        self.chain_key, self.iteration, self.skipped = chain, iteration, skipped
        return header, plaintext

    def to_bytes(self) -> bytes:
        writer = (
            Writer()
            .u8(SENDER_KEY_VERSION)
            .raw(self.group_id)
            .u32(self.key_id)
            .u32(self.iteration)
            .raw(self.chain_key)
            .raw(self.signing_public)
            .u16(len(self.skipped))
        )
        for index in sorted(self.skipped):
            writer.u32(index).raw(self.skipped[index])
        return writer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReceivedSenderKey:
        reader = Reader(data, "received sender key")
        reader.version((SENDER_KEY_VERSION,))
        group_id = reader.key(GROUP_ID_SIZE, "group id")
        key_id, iteration = reader.u32("key id"), reader.u32("iteration")
        chain_key = reader.key(CHAIN_KEY_SIZE, "chain key")
        public = reader.key(ED25519_PUBLIC_KEY_SIZE, "signing key")
        skipped = {reader.u32("skipped iteration"): reader.key(CHAIN_KEY_SIZE, "skipped key") for _ in range(reader.u16("skipped"))}
        reader.end()
        return cls(
            group_id=group_id, key_id=key_id, iteration=iteration, chain_key=chain_key, signing_public=public, skipped=skipped
        )
