"""Safety numbers: a fingerprint two users compare out of band.

Signal's numeric fingerprint construction, over our Ed25519 identity keys::

    h = version u16 (= 0) || identity_key || stable_id (UTF-8)
    repeat 5000 times:  h = SHA-512(h || identity_key)

exactly Signal's ``NumericFingerprintGenerator`` loop. xchat's parameters
differ from libsignal's in two places: the key is the 32-byte Ed25519 key
(libsignal: the 33-byte ``0x05 || Curve25519`` encoding) and the loop runs
5000 times (libsignal: 5200). :func:`numeric_fingerprint` takes both as
arguments, so tests reproduce libsignal's published vector with libsignal's
parameters through the same code that computes ours. The first 30 bytes
of ``h`` give six 5-byte chunks, each rendered as ``int(chunk) % 100000``
zero-padded to 5 digits: 30 digits per party. The safety number is the two
30-digit strings sorted and concatenated, so both sides see the same 60
digits. It depends only on the identity keys and stable ids, so it is the
same for every session between the two devices.
"""

from __future__ import annotations

import hashlib

from .encoding import check_length
from .errors import MalformedMessageError
from .primitives import ED25519_PUBLIC_KEY_SIZE

__all__ = [
    "FINGERPRINT_ITERATIONS",
    "FINGERPRINT_VERSION",
    "displayable_fingerprint",
    "numeric_fingerprint",
    "safety_number",
]

FINGERPRINT_VERSION = 0
FINGERPRINT_ITERATIONS = 5000
_MAX_STABLE_ID = 1024
# Bounds the work a caller can ask for (libsignal accepts 2..1,000,000 too).
_MAX_ITERATIONS = 1_000_000
_MAX_KEY_ENCODING = 64


def _stable_id_bytes(stable_id: str | bytes) -> bytes:
    raw = stable_id.encode("utf-8") if isinstance(stable_id, str) else stable_id
    if not isinstance(raw, bytes) or not 0 < len(raw) <= _MAX_STABLE_ID:
        raise MalformedMessageError("stable id must be 1..1024 bytes (or a str)")
    return raw


def displayable_fingerprint(identity_key: bytes, stable_id: str | bytes) -> str:
    """One party's 30 digits, with xchat's parameters (32-byte Ed25519 key, 5000 iterations)."""
    check_length("identity key", identity_key, ED25519_PUBLIC_KEY_SIZE)
    return numeric_fingerprint(identity_key, stable_id, iterations=FINGERPRINT_ITERATIONS)


def numeric_fingerprint(key_encoding: bytes, stable_id: str | bytes, *, iterations: int) -> str:
    """One party's 30 digits for any key encoding and iteration count (libsignal's are 33 bytes, 5200)."""
    if not isinstance(key_encoding, bytes) or not 0 < len(key_encoding) <= _MAX_KEY_ENCODING:
        raise MalformedMessageError(f"key encoding must be 1..{_MAX_KEY_ENCODING} bytes")
    if not isinstance(iterations, int) or not 1 < iterations <= _MAX_ITERATIONS:
        raise MalformedMessageError(f"iterations must be 2..{_MAX_ITERATIONS}, got {iterations!r}")
    digest = FINGERPRINT_VERSION.to_bytes(2, "big") + key_encoding + _stable_id_bytes(stable_id)
    for _ in range(iterations):
        digest = hashlib.sha512(digest + key_encoding).digest()
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


def safety_number(
    our_identity_public: bytes,
    our_stable_id: str | bytes,
    their_identity_public: bytes,
    their_stable_id: str | bytes,
) -> str:
    """The 60-digit safety number; identical on both sides."""
    ours = displayable_fingerprint(our_identity_public, our_stable_id)
    theirs = displayable_fingerprint(their_identity_public, their_stable_id)
    return ours + theirs if ours <= theirs else theirs + ours
