"""Safety numbers: Signal's numeric fingerprint construction, symmetric and stable."""

from __future__ import annotations

import hashlib

import pytest

from xchat.client.crypto import IdentityKeyPair, MalformedMessageError, initiate_session, safety_number


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


def test_fixed_vector() -> None:
    # Pins the construction: any change to it breaks every user's comparison.
    key_a, key_b = bytes(range(32)), bytes(range(32, 64))
    expected = "".join(sorted([reference(key_a, "a"), reference(key_b, "b")]))
    assert safety_number(key_a, "a", key_b, "b") == expected


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
