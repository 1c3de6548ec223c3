"""Memoised derivations of long-term keys are keyed by everything they depend on (issue 18).

The Ed25519→X25519 conversion of identity keys and the verification of sender
certificate signatures are remembered, since the same long-term values come
with every message. Neither may answer for another key: a peer whose
identity key changed is sealed to under the new key, and a signature that
verified under one account key, or over one certificate body, says nothing
about another. The sealed layer's ephemeral key stays fresh per message
(``test_crypto_sealed.py::test_fresh_ephemeral_key_each_time``).
"""

from __future__ import annotations

from dataclasses import replace

import nacl.bindings
import pytest

from xchat.client.crypto import IdentityKeyPair, TamperedMessageError, seal, unseal
from xchat.client.crypto.account import AccountKey
from xchat.client.crypto.certificates import CertificateError, check_certificate, issue_certificate, verify_signature
from xchat.client.crypto.primitives import ed25519_public_to_x25519

DEVICE = "0123456789abcdef0123456789abcdef"
NOW_MS = 1_800_000_000_000


def test_converted_keys_are_the_conversion_of_that_very_key() -> None:
    keys = [IdentityKeyPair.generate() for _ in range(3)]
    for _ in range(2):  # the second round is served from memory
        for key in keys:
            expected = bytes(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(key.public))
            assert ed25519_public_to_x25519(key.public) == expected == key.x25519_public


def test_a_peer_whose_identity_key_changed_is_sealed_to_under_the_new_key() -> None:
    before, after = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    first = seal(sender_account="alice", sender_device=DEVICE, inner=b"1", recipient_identity=before.public)
    assert unseal(before, first).inner == b"1"
    # The same device reinstalled: a new identity key. What is sealed now opens only under it.
    second = seal(sender_account="alice", sender_device=DEVICE, inner=b"2", recipient_identity=after.public)
    assert unseal(after, second).inner == b"2"
    with pytest.raises(TamperedMessageError):
        unseal(before, second)


def _certificate(key: AccountKey, identity: IdentityKeyPair, list_version: int = 1):  # type: ignore[no-untyped-def]
    return issue_certificate(
        key.seed, account="alice", device=DEVICE, identity_key=identity.public, list_version=list_version, now_ms=NOW_MS
    )


def test_a_verified_certificate_proves_nothing_for_another_key_body_or_signature() -> None:
    account, other = AccountKey.generate(), AccountKey.generate()
    identity = IdentityKeyPair.generate()
    certificate = _certificate(account, identity)
    for _ in range(2):  # the second round is served from memory
        verify_signature(certificate, account.public)
    # Verified once under the right key: still refused under another account key.
    with pytest.raises(CertificateError) as refused:
        verify_signature(certificate, other.public)
    assert refused.value.problem == "signature"
    # The same signature over another body (a later list version, another expiry, another device key).
    for forged in (
        replace(certificate, list_version=2),
        replace(certificate, expires_ms=certificate.expires_ms + 1),
        replace(certificate, identity_key=IdentityKeyPair.generate().public),
    ):
        with pytest.raises(CertificateError) as refused:
            verify_signature(forged, account.public)
        assert refused.value.problem == "signature"
    # Another certificate's signature on this body.
    with pytest.raises(CertificateError):
        verify_signature(replace(certificate, signature=_certificate(account, identity, 2).signature), account.public)


def test_the_checks_beyond_the_signature_still_run_on_every_message() -> None:
    account, identity = AccountKey.generate(), IdentityKeyPair.generate()
    certificate = _certificate(account, identity)
    data = certificate.to_bytes()

    def check(**overrides):  # type: ignore[no-untyped-def]
        arguments = {
            "account_key": account.public, "claimed_account": "alice", "claimed_device": DEVICE,
            "session_identity_key": identity.public, "now_ms": NOW_MS,
        } | overrides
        return check_certificate(data, **arguments)

    assert check() == certificate  # parsed, verified, and remembered
    # Other bytes are parsed and verified afresh: a flipped bit in the expiry or the signature.
    for index in (len(data) - 65, len(data) - 1):
        tampered = bytearray(data)
        tampered[index] ^= 1
        with pytest.raises(CertificateError) as refused:
            check_certificate(
                bytes(tampered), account_key=account.public, claimed_account="alice", claimed_device=DEVICE,
                session_identity_key=identity.public, now_ms=NOW_MS,
            )
        assert refused.value.problem == "signature"
    for overrides, problem in (
        ({"now_ms": certificate.expires_ms}, "expired"),
        ({"claimed_account": "mallory"}, "account"),
        ({"session_identity_key": IdentityKeyPair.generate().public}, "key"),
        ({"account_key": AccountKey.generate().public}, "signature"),
    ):
        with pytest.raises(CertificateError) as refused:
            check(**overrides)
        assert refused.value.problem == problem
