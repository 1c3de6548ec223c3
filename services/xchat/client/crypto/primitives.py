"""Thin wrappers over the primitives we use; the one place foreign exceptions are translated.

Library per primitive (nothing here is home-made):

* Ed25519 signatures and the Ed25519→X25519 key conversion: PyNaCl (libsodium).
* X25519, HKDF-SHA256, AES-256-GCM, ML-KEM-768: ``cryptography`` (OpenSSL / Rust).
* HMAC-SHA256 and SHA-512: the standard library (``hmac``, ``hashlib``, OpenSSL-backed).

Everything above this module deals in ``bytes`` and our error types only.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable

import nacl.bindings
import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .encoding import check_length
from .errors import InvalidKeyError, TamperedMessageError

__all__ = [
    "AEAD_TAG_SIZE",
    "ED25519_PUBLIC_KEY_SIZE",
    "ED25519_SEED_SIZE",
    "ED25519_SIGNATURE_SIZE",
    "MLKEM768_CIPHERTEXT_SIZE",
    "MLKEM768_PUBLIC_KEY_SIZE",
    "MLKEM768_SEED_SIZE",
    "SHARED_SECRET_SIZE",
    "X25519_KEY_SIZE",
    "X25519PrivateKey",
    "aead_decrypt",
    "aead_encrypt",
    "ed25519_public_to_x25519",
    "ed25519_verify",
    "hkdf_sha256",
    "hmac_sha256",
    "mlkem_decapsulate",
    "mlkem_encapsulate",
    "mlkem_generate",
    "mlkem_private_from_seed",
    "mlkem_public_bytes",
    "x25519",
    "x25519_generate",
    "x25519_private_from_bytes",
    "x25519_private_bytes",
    "x25519_public_bytes",
]

ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SEED_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
X25519_KEY_SIZE = 32
MLKEM768_PUBLIC_KEY_SIZE = 1184
MLKEM768_CIPHERTEXT_SIZE = 1088
# cryptography stores ML-KEM private keys as the 64-byte (d, z) seed of FIPS 203.
MLKEM768_SEED_SIZE = 64
SHARED_SECRET_SIZE = 32
AEAD_TAG_SIZE = 16

_AEAD_KEY_INFO = b"xchat_DR_AES-256-GCM_message_key"
_AEAD_NONCE_SIZE = 12

# Known-answer vectors only (tests/crypto/test_crypto_vectors.py); never set by the
# SDK. While ``_fixed_random`` is set, X25519 and ML-KEM key generation take their
# private bytes from it (so PQXDH ephemerals, ratchet keys and sealed-sender
# ephemerals are reproducible), and while ``_fixed_encapsulation`` is set ML-KEM
# encapsulation returns its ``(shared_secret, ciphertext)`` for the public key:
# ``cryptography`` offers no derandomized Encaps, so the vectors fix its output
# and check it with the real Decaps.
_fixed_random: Callable[[int], bytes] | None = None
_fixed_encapsulation: Callable[[bytes], tuple[bytes, bytes]] | None = None


# --- Ed25519 (PyNaCl) --------------------------------------------------------------


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` by ``public``."""
    if len(public) != ED25519_PUBLIC_KEY_SIZE or len(signature) != ED25519_SIGNATURE_SIZE:
        return False
    try:
        nacl.signing.VerifyKey(public).verify(message, signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def ed25519_public_to_x25519(public: bytes, what: str = "identity key") -> bytes:
    """Birational map of an Ed25519 public key to its X25519 (Montgomery u) form."""
    check_length(what, public, ED25519_PUBLIC_KEY_SIZE)
    try:
        return _converted(bytes(public))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise InvalidKeyError(what) from exc


# Identity keys are long-term and few (one per peer device), and the conversion
# (a point decompression and a field inversion, ~40 µs) ran for every sealed
# message: memoised by the Ed25519 key itself, a public input with one public
# output, so a peer's new identity key is simply another entry. A key that does
# not convert raises and is not kept.
CONVERTED_KEYS_MAX = 4096


@functools.lru_cache(maxsize=CONVERTED_KEYS_MAX)
def _converted(public: bytes) -> bytes:
    return bytes(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public))


# --- X25519 (cryptography) ---------------------------------------------------------


def x25519_generate() -> X25519PrivateKey:
    if _fixed_random is not None:
        return X25519PrivateKey.from_private_bytes(_fixed_random(X25519_KEY_SIZE))
    return X25519PrivateKey.generate()


def x25519_private_from_bytes(raw: bytes, what: str = "X25519 private key") -> X25519PrivateKey:
    check_length(what, raw, X25519_KEY_SIZE)
    return X25519PrivateKey.from_private_bytes(raw)


def x25519_private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def x25519_public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def x25519(private: X25519PrivateKey, public: bytes, what: str = "X25519 public key") -> bytes:
    """DH(private, public); a low-order peer key (all-zero output) is an :class:`InvalidKeyError`."""
    check_length(what, public, X25519_KEY_SIZE)
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:
        raise InvalidKeyError(what) from exc


# --- KDFs --------------------------------------------------------------------------


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    # The digest by name takes OpenSSL's one-shot HMAC (a constructor would be called per block).
    return hmac.digest(key, data, "sha256")


# --- AEAD (AES-256-GCM) ------------------------------------------------------------


def _aead_key_nonce(message_key: bytes) -> tuple[bytes, bytes]:
    # Each message key encrypts exactly one message, so deriving key and nonce
    # from it (one of the options the Double Ratchet spec lists) never reuses a nonce.
    okm = hkdf_sha256(
        message_key, salt=bytes(32), info=_AEAD_KEY_INFO, length=32 + _AEAD_NONCE_SIZE
    )
    return okm[:32], okm[32:]


def aead_encrypt(message_key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    key, nonce = _aead_key_nonce(message_key)
    return AESGCM(key).encrypt(nonce, plaintext, associated_data)


def aead_decrypt(message_key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    key, nonce = _aead_key_nonce(message_key)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated_data)
    except InvalidTag as exc:
        raise TamperedMessageError("message authentication failed") from exc


# --- ML-KEM-768 (cryptography) -----------------------------------------------------


def mlkem_generate() -> mlkem.MLKEM768PrivateKey:
    if _fixed_random is not None:
        return mlkem.MLKEM768PrivateKey.from_seed_bytes(_fixed_random(MLKEM768_SEED_SIZE))
    return mlkem.MLKEM768PrivateKey.generate()


def mlkem_private_from_seed(seed: bytes) -> mlkem.MLKEM768PrivateKey:
    check_length("ML-KEM-768 seed", seed, MLKEM768_SEED_SIZE)
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)


def mlkem_public_bytes(key: mlkem.MLKEM768PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def mlkem_encapsulate(public: bytes, what: str = "ML-KEM-768 public key") -> tuple[bytes, bytes]:
    """Return ``(shared_secret, ciphertext)`` for the raw 1184-byte public key."""
    check_length(what, public, MLKEM768_PUBLIC_KEY_SIZE)
    if _fixed_encapsulation is not None:
        return _fixed_encapsulation(public)
    try:
        return mlkem.MLKEM768PublicKey.from_public_bytes(public).encapsulate()
    except ValueError as exc:
        raise InvalidKeyError(what) from exc


def mlkem_decapsulate(private: mlkem.MLKEM768PrivateKey, ciphertext: bytes) -> bytes:
    # ML-KEM decapsulation never fails on a well-sized ciphertext (implicit
    # rejection returns a pseudorandom secret); the AEAD then fails instead.
    check_length("ML-KEM-768 ciphertext", ciphertext, MLKEM768_CIPHERTEXT_SIZE)
    try:
        return private.decapsulate(ciphertext)
    except ValueError as exc:
        raise InvalidKeyError("ML-KEM-768 ciphertext") from exc
