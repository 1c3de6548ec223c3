"""Sealed sender: the envelope the server stores names no sender.

The ratchet message (whose PREKEY form even carries the sender's identity
key) is wrapped once more, to the recipient's identity key, together with the
sender's account and device id::

    sealed = version(3) || ephemeral X25519 public (32) || AES-256-GCM(
                 u8 len(account) || account, zero-padded to 32 || device id (16)
                 || u8 has_profile_key || profile key (32; zeros when none)
                 || u8 has_certificate || certificate (162; zeros when none)
                 || inner wire message)
    key    = HKDF-SHA256(X25519(ephemeral, IK_recipient as X25519),
                         salt = ephemeral public || IK_recipient, info = SEALED_INFO)
    AD     = version || ephemeral public || IK_recipient

Each message uses a fresh ephemeral key, so each AEAD key encrypts once.
Version 2 pads the account to its maximum, so the sealed length depends on the
(padded) inner message only, never on who sends, and carries the sender
device's *profile key* (issue 17): the recipient derives from it the delivery
access key with which it may later send to this device without naming itself
(``xchat.client.crypto.delivery``). The SDK keeps a profile key only from a
message whose inner layer authenticated the claimed sender. Version 3 adds, after the
profile key, ``u8 has_certificate || sender certificate`` (fixed
``CERTIFICATE_SIZE`` bytes, zeros when none; :mod:`.certificates`): the
account key's statement that this device (id and identity key) belongs to the
account, which the receiver checks on every message. Versions 1 (no padding,
no profile key) and 2 (no certificate) are still opened.
The outer layer hides *who* sent; *that* the claimed sender really sent it is
proven by the inner layer: an existing session authenticates it, and a new
session's initiator identity key must match the claimed device's key in the
directory (the SDK checks that before accepting a new session).
"""

from __future__ import annotations

from dataclasses import dataclass

from .certificates import CERTIFICATE_SIZE
from .encoding import Reader, Writer
from .errors import MalformedMessageError
from .identity import IdentityKeyPair
from .primitives import (
    ED25519_PUBLIC_KEY_SIZE,
    X25519_KEY_SIZE,
    aead_decrypt,
    aead_encrypt,
    ed25519_public_to_x25519,
    hkdf_sha256,
    x25519,
    x25519_generate,
    x25519_public_bytes,
)

SEALED_VERSION = 3
# Padded, with a profile key, without a sender certificate (still opened).
UNCERTIFIED_SEALED_VERSION = 2
UNPADDED_SEALED_VERSION = 1
PROFILE_KEY_SIZE = 32
SEALED_INFO = b"xchat_sealed_sender_v1_X25519_SHA-256_AES-256-GCM"
DEVICE_ID_SIZE = 16
MAX_ACCOUNT_SIZE = 32


@dataclass(frozen=True, slots=True)
class SealedContent:
    sender_account: str
    sender_device: str
    inner: bytes
    # The sender device's profile key (b"": none shared).
    profile_key: bytes = b""
    # The sender certificate (b"": none, a version 1 or 2 envelope or a sender without one).
    certificate: bytes = b""


def _key(shared: bytes, ephemeral_public: bytes, recipient_identity: bytes) -> bytes:
    return hkdf_sha256(shared, salt=ephemeral_public + recipient_identity, info=SEALED_INFO, length=32)


def seal(
    *,
    sender_account: str,
    sender_device: str,
    inner: bytes,
    recipient_identity: bytes,
    profile_key: bytes = b"",
    certificate: bytes = b"",
) -> bytes:
    """Wraps ``inner`` so only the holder of ``recipient_identity`` learns the sender."""
    account = sender_account.encode("ascii")
    if not 0 < len(account) <= MAX_ACCOUNT_SIZE:
        raise MalformedMessageError(f"sealed sender: account must be 1..{MAX_ACCOUNT_SIZE} bytes")
    try:
        device = bytes.fromhex(sender_device)
    except ValueError as exc:
        raise MalformedMessageError("sealed sender: device id must be hex") from exc
    if len(device) != DEVICE_ID_SIZE:
        raise MalformedMessageError(f"sealed sender: device id must be {DEVICE_ID_SIZE} bytes")
    if len(profile_key) not in (0, PROFILE_KEY_SIZE):
        raise MalformedMessageError(f"sealed sender: profile key must be {PROFILE_KEY_SIZE} bytes")
    if len(certificate) not in (0, CERTIFICATE_SIZE):
        raise MalformedMessageError(f"sealed sender: a certificate is {CERTIFICATE_SIZE} bytes")
    ephemeral = x25519_generate()
    ephemeral_public = x25519_public_bytes(ephemeral)
    shared = x25519(ephemeral, ed25519_public_to_x25519(recipient_identity, "recipient identity key"))
    w = Writer().u8(len(account)).raw(account.ljust(MAX_ACCOUNT_SIZE, b"\x00")).raw(device)
    w.u8(1 if profile_key else 0).raw(profile_key.ljust(PROFILE_KEY_SIZE, b"\x00"))
    body = w.u8(1 if certificate else 0).raw(certificate.ljust(CERTIFICATE_SIZE, b"\x00")).raw(inner).getvalue()
    header = bytes([SEALED_VERSION]) + ephemeral_public
    return header + aead_encrypt(_key(shared, ephemeral_public, recipient_identity), body, header + recipient_identity)


def unseal(identity: IdentityKeyPair, sealed: bytes) -> SealedContent:
    """Opens a sealed envelope addressed to ``identity``; CryptoError on anything else."""
    reader = Reader(sealed, "sealed envelope")
    version = reader.version((UNPADDED_SEALED_VERSION, UNCERTIFIED_SEALED_VERSION, SEALED_VERSION))
    ephemeral_public = reader.key(X25519_KEY_SIZE, "ephemeral key")
    ciphertext = reader.rest()
    recipient_identity = identity.public
    assert len(recipient_identity) == ED25519_PUBLIC_KEY_SIZE
    shared = x25519(identity.x25519_private, ephemeral_public, "sealed ephemeral key")
    header = bytes([version]) + ephemeral_public
    body = aead_decrypt(_key(shared, ephemeral_public, recipient_identity), ciphertext, header + recipient_identity)
    inner_reader = Reader(body, "sealed content")
    size = inner_reader.u8("account length")
    if not 0 < size <= MAX_ACCOUNT_SIZE:
        raise MalformedMessageError("sealed content: account length out of range")
    field = inner_reader.take(size if version == UNPADDED_SEALED_VERSION else MAX_ACCOUNT_SIZE, "account")
    if any(field[size:]):
        raise MalformedMessageError("sealed content: account padding is not zero")
    try:
        account = field[:size].decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedMessageError("sealed content: account is not ASCII") from exc
    device = inner_reader.take(DEVICE_ID_SIZE, "device id").hex()
    profile_key = b""
    if version >= UNCERTIFIED_SEALED_VERSION:
        has_key = inner_reader.u8("profile key flag")
        raw_key = inner_reader.take(PROFILE_KEY_SIZE, "profile key")
        if has_key not in (0, 1) or (not has_key and any(raw_key)):
            raise MalformedMessageError("sealed content: profile key flag or padding is malformed")
        profile_key = raw_key if has_key else b""
    certificate = b""
    if version >= SEALED_VERSION:
        has_certificate = inner_reader.u8("certificate flag")
        raw_certificate = inner_reader.take(CERTIFICATE_SIZE, "certificate")
        if has_certificate not in (0, 1) or (not has_certificate and any(raw_certificate)):
            raise MalformedMessageError("sealed content: certificate flag or padding is malformed")
        certificate = raw_certificate if has_certificate else b""
    return SealedContent(account, device, inner_reader.rest(), profile_key, certificate)
