"""Sender certificates: the account key vouches, inside the sealed layer, for the device that sends.

Every linked device holds the account key (docs/adr/0011) and issues its own
certificate, valid :data:`CERTIFICATE_LIFETIME_MS` (30 days) and renewed by
the SDK when less than :data:`RENEW_BEFORE_MS` is left. The sealed layer
(version 3, :mod:`.sealed`) carries it with every message. Fixed size, so a
sealed envelope's length never depends on who sent it (big-endian)::

    certificate = version u8 (1) || u8 len(account) || account, zero-padded to 32
                  || device id 16 || device identity key 32 (Ed25519)
                  || list version u64 || expires ms u64 (Unix epoch)
                  || Ed25519 signature 64 by the account key over
                     b"xchat-sender-cert-v1\\x00" || every byte before it

``list version`` is the version of the account's signed device list current
when the certificate was issued (one naming the device). A receiver whose
pinned list is *older* than that accepts the device from its certificate
without asking the directory (the device was linked after its pin); one whose
pinned list is as new or newer and does not name the device refuses it
(revoked since). :func:`check_certificate` does every check that the message
alone allows; the caller supplies the pinned account key and list.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from .encoding import Reader, Writer, check_length
from .errors import CryptoError
from .primitives import ED25519_PUBLIC_KEY_SIZE

__all__ = [
    "CERTIFICATE_LIFETIME_MS",
    "CERTIFICATE_SIZE",
    "CERTIFICATE_VERSION",
    "MAX_LIFETIME_MS",
    "RENEW_BEFORE_MS",
    "CertificateError",
    "SenderCertificate",
    "certificate_statement",
    "check_certificate",
    "issue_certificate",
    "verify_signature",
]

CERTIFICATE_VERSION = 1
_MAX_ACCOUNT = 32
_DEVICE_ID_SIZE = 16
_SIGNATURE_SIZE = 64
_BODY_SIZE = 1 + 1 + _MAX_ACCOUNT + _DEVICE_ID_SIZE + ED25519_PUBLIC_KEY_SIZE + 8 + 8
CERTIFICATE_SIZE = _BODY_SIZE + _SIGNATURE_SIZE
_DAY_MS = 24 * 3600 * 1000
# Signal's sender certificates live about a day; ours are issued by the device itself
# (no server round trip), so a month, renewed a week ahead, keeps offline devices valid.
CERTIFICATE_LIFETIME_MS = 30 * _DAY_MS
RENEW_BEFORE_MS = 7 * _DAY_MS
# A receiver refuses an expiry further ahead than this (plus a day of clock skew):
# a stolen certificate never outlives a month.
MAX_LIFETIME_MS = CERTIFICATE_LIFETIME_MS + _DAY_MS
_STATEMENT_LABEL = b"xchat-sender-cert-v1\x00"


class CertificateError(CryptoError):
    """A sender certificate the receiver refuses; ``problem`` says which check failed.

    ``problem``: "malformed", "account" (names another account than the sealed
    claim), "device" (another device than the sealed claim), "key" (another
    identity key than the one that authenticated the message), "expired"
    (or expiring implausibly far ahead), "signature" (not the pinned account key's).
    """

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"sender certificate refused ({problem}): {detail}")
        self.problem = problem
        self.detail = detail


def certificate_statement(body: bytes) -> bytes:
    """What the account key signs (domain-separated from device lists and admissions)."""
    return _STATEMENT_LABEL + body


@dataclass(frozen=True, slots=True)
class SenderCertificate:
    account: str
    device: str
    identity_key: bytes
    list_version: int
    expires_ms: int
    signature: bytes

    @staticmethod
    def body_of(account: str, device: str, identity_key: bytes, list_version: int, expires_ms: int) -> bytes:
        raw_account = account.encode("ascii")
        if not 0 < len(raw_account) <= _MAX_ACCOUNT:
            raise CertificateError("malformed", f"account must be 1..{_MAX_ACCOUNT} ASCII bytes")
        raw_device = bytes.fromhex(device)
        check_length("certificate device id", raw_device, _DEVICE_ID_SIZE)
        check_length("certificate identity key", identity_key, ED25519_PUBLIC_KEY_SIZE)
        w = Writer().u8(CERTIFICATE_VERSION).u8(len(raw_account)).raw(raw_account.ljust(_MAX_ACCOUNT, b"\x00"))
        return w.raw(raw_device).raw(identity_key).u64(list_version).u64(expires_ms).getvalue()

    @property
    def body(self) -> bytes:
        return self.body_of(self.account, self.device, self.identity_key, self.list_version, self.expires_ms)

    def to_bytes(self) -> bytes:
        return self.body + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderCertificate:
        """Parses strictly; CertificateError("malformed") for anything else."""
        if len(data) != CERTIFICATE_SIZE:
            raise CertificateError("malformed", f"{len(data)} bytes, not {CERTIFICATE_SIZE}")
        try:
            r = Reader(data, "sender certificate")
            r.version((CERTIFICATE_VERSION,))
            size = r.u8("account length")
            field = r.take(_MAX_ACCOUNT, "account")
            if not 0 < size <= _MAX_ACCOUNT or any(field[size:]):
                raise CertificateError("malformed", "account length or padding is wrong")
            account = field[:size].decode("ascii")
            device = r.take(_DEVICE_ID_SIZE, "device id").hex()
            identity_key = r.key(ED25519_PUBLIC_KEY_SIZE, "identity key")
            list_version, expires_ms = r.u64("list version"), r.u64("expiry")
            signature = r.take(_SIGNATURE_SIZE, "signature")
            r.end()
        except UnicodeDecodeError as exc:
            raise CertificateError("malformed", "account is not ASCII") from exc
        except CertificateError:
            raise
        except CryptoError as exc:
            raise CertificateError("malformed", str(exc)) from exc
        return cls(account, device, identity_key, list_version, expires_ms, signature)

    def expiring(self, now_ms: int) -> bool:
        """True when the issuer should renew it (less than RENEW_BEFORE_MS left)."""
        return self.expires_ms - now_ms < RENEW_BEFORE_MS


def issue_certificate(
    account_seed: bytes, *, account: str, device: str, identity_key: bytes, list_version: int, now_ms: int
) -> SenderCertificate:
    """A certificate for ``device`` signed by the account key (its private seed), valid 30 days from ``now_ms``."""
    expires = now_ms + CERTIFICATE_LIFETIME_MS
    body = SenderCertificate.body_of(account, device, identity_key, list_version, expires)
    signature = bytes(nacl.signing.SigningKey(account_seed).sign(certificate_statement(body)).signature)
    return SenderCertificate(account, device, identity_key, list_version, expires, signature)


def check_certificate(
    data: bytes,
    *,
    account_key: bytes | None,
    claimed_account: str,
    claimed_device: str,
    session_identity_key: bytes,
    now_ms: int,
) -> SenderCertificate:
    """The certificate if it holds for this message; CertificateError naming the failed check otherwise.

    ``session_identity_key`` is the key that authenticated the inner message
    (its session's). ``account_key`` None: the sender account's key is not
    pinned yet (first contact), so the signature is left to the caller, who
    checks it with :func:`verify_signature` once the key is pinned.
    """
    certificate = _parsed(bytes(data))
    if certificate.account != claimed_account:
        raise CertificateError("account", f"issued for {certificate.account!r}, the message claims {claimed_account!r}")
    if certificate.device != claimed_device:
        raise CertificateError("device", f"issued for device {certificate.device}, the message claims {claimed_device}")
    if certificate.identity_key != session_identity_key:
        raise CertificateError("key", "issued for another identity key than the one that authenticated the message")
    if certificate.expires_ms <= now_ms:
        raise CertificateError("expired", f"expired {(now_ms - certificate.expires_ms) // 1000} s ago")
    if certificate.expires_ms > now_ms + MAX_LIFETIME_MS:
        raise CertificateError("expired", "expires further ahead than any certificate lives")
    if account_key is not None:
        verify_signature(certificate, account_key)
    return certificate


def verify_signature(certificate: SenderCertificate, account_key: bytes) -> None:
    """CertificateError("signature") unless ``account_key`` signed ``certificate``."""
    try:
        _verified(bytes(account_key), certificate)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as exc:
        raise CertificateError("signature", "not signed by the account's pinned account key") from exc


# A device sends the same certificate with every message for weeks, and the
# receiver parsed it and checked its Ed25519 signature each time (~100 µs, the
# dearest step of opening a message). Both are pure functions of their inputs,
# remembered by all of them: the parse by the certificate's bytes, a signature
# that verified by the account key and every field of the certificate (its
# body and signature), so another account key, list version, expiry, device
# key or signature is another entry, checked afresh. Failures raise and are
# not kept. Everything else ``check_certificate`` checks (claims, session key,
# expiry against the clock) runs on every message.
CERTIFICATES_CACHED = 1024


@functools.lru_cache(maxsize=CERTIFICATES_CACHED)
def _parsed(data: bytes) -> SenderCertificate:
    return SenderCertificate.from_bytes(data)


@functools.lru_cache(maxsize=CERTIFICATES_CACHED)
def _verified(account_key: bytes, certificate: SenderCertificate) -> bool:
    nacl.signing.VerifyKey(account_key).verify(certificate_statement(certificate.body), certificate.signature)
    return True
