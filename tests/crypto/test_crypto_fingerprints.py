"""Safety numbers: Signal's numeric fingerprint construction, symmetric and stable."""

from __future__ import annotations

import hashlib

import pytest

from xchat.client.crypto import IdentityKeyPair, MalformedMessageError, initiate_session, safety_number
from xchat.client.crypto.fingerprints import numeric_fingerprint

# libsignal's own published vector (rust/protocol/src/fingerprint.rs, test
# fingerprint_test_v1; testVectorsVersion1 in the Java library): two 33-byte
# serialized identity keys (0x05 || Curve25519), stable ids that are phone
# numbers, 5200 iterations. The expected digits are libsignal's, typed here.
LIBSIGNAL_ALICE_KEY = bytes.fromhex("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868")
LIBSIGNAL_BOB_KEY = bytes.fromhex("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")
LIBSIGNAL_ITERATIONS = 5200
LIBSIGNAL_DISPLAYABLE_V1 = "300354477692869396892869876765458257569162576843440918079131"


def reference(key: bytes, stable_id: str) -> str:
    h = b"\x00\x00" + key + stable_id.encode()
    for _ in range(5000):
        h = hashlib.sha512(h + key).digest()
    return "".join(f"{int.from_bytes(h[i:i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5))


def test_matches_reference_and_is_symmetric() -> None:
    a, b = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    ours = safety_number(a.public, "alice@example", b.public, "bob@example")
    theirs = safety_number(b.public, "bob@example", a.public, "alice@example")
    assert ours == theirs and len(ours) == 60 and ours.isdigit()
    parts = sorted([reference(a.public, "alice@example"), reference(b.public, "bob@example")])
    assert ours == "".join(parts)


def test_libsignal_published_vector_with_libsignals_parameters() -> None:
    alice = numeric_fingerprint(LIBSIGNAL_ALICE_KEY, "+14152222222", iterations=LIBSIGNAL_ITERATIONS)
    bob = numeric_fingerprint(LIBSIGNAL_BOB_KEY, "+14153333333", iterations=LIBSIGNAL_ITERATIONS)
    assert "".join(sorted([alice, bob])) == LIBSIGNAL_DISPLAYABLE_V1
    # Each side sees the same 60 digits (libsignal's display sorts the halves).
    assert "".join(sorted([bob, alice])) == LIBSIGNAL_DISPLAYABLE_V1


def test_fixed_vector() -> None:
    # Pins xchat's own parameters (32-byte Ed25519 keys, 5000 iterations):
    # any change to the construction breaks every user's comparison. Literal
    # digits, computed once; the independent ``reference`` agrees.
    key_a, key_b = bytes(range(32)), bytes(range(32, 64))
    expected = "171357636487547594471039601012226284484548683087470871581187"
    assert safety_number(key_a, "a", key_b, "b") == expected
    assert safety_number(key_b, "b", key_a, "a") == expected
    assert "".join(sorted([reference(key_a, "a"), reference(key_b, "b")])) == expected


def test_stable_across_sessions_and_sensitive_to_keys(party) -> None:
    alice, bob = party(), party()
    before = safety_number(alice.identity.public, "a", bob.identity.public, "b")
    initiate_session(alice.identity, bob.bundle())
    initiate_session(alice.identity, bob.bundle())
    assert safety_number(alice.identity.public, "a", bob.identity.public, "b") == before
    mallory = IdentityKeyPair.generate()
    assert safety_number(alice.identity.public, "a", mallory.public, "b") != before
    assert safety_number(alice.identity.public, "a", bob.identity.public, "c") != before


def test_bad_inputs() -> None:
    with pytest.raises(MalformedMessageError):
        safety_number(b"\x00" * 31, "a", b"\x00" * 32, "b")
    with pytest.raises(MalformedMessageError):
        safety_number(b"\x00" * 32, "", b"\x00" * 32, "b")
    with pytest.raises(MalformedMessageError):
        numeric_fingerprint(LIBSIGNAL_ALICE_KEY, "a", iterations=1)
    with pytest.raises(MalformedMessageError):
        numeric_fingerprint(LIBSIGNAL_ALICE_KEY, "a", iterations=1_000_001)
    with pytest.raises(MalformedMessageError):
        numeric_fingerprint(b"", "a", iterations=5200)
