"""Sealed sender: only the recipient learns the sender; tampering and misuse give typed errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xchat.client.crypto import (
    CryptoError,
    IdentityKeyPair,
    MalformedMessageError,
    TamperedMessageError,
    UnsupportedVersionError,
    seal,
    unseal,
)

DEVICE = "0123456789abcdef0123456789abcdef"


def test_round_trip_and_nothing_in_clear() -> None:
    bob = IdentityKeyPair.generate()
    sealed = seal(sender_account="alice", sender_device=DEVICE, inner=b"inner wire", recipient_identity=bob.public)
    assert b"alice" not in sealed and bytes.fromhex(DEVICE) not in sealed and b"inner wire" not in sealed
    content = unseal(bob, sealed)
    assert (content.sender_account, content.sender_device, content.inner) == ("alice", DEVICE, b"inner wire")


def test_fresh_ephemeral_key_each_time() -> None:
    bob = IdentityKeyPair.generate()
    one = seal(sender_account="alice", sender_device=DEVICE, inner=b"x", recipient_identity=bob.public)
    two = seal(sender_account="alice", sender_device=DEVICE, inner=b"x", recipient_identity=bob.public)
    assert one[1:33] != two[1:33] and one != two


def test_only_the_recipient_can_open() -> None:
    bob, eve = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    sealed = seal(sender_account="alice", sender_device=DEVICE, inner=b"x", recipient_identity=bob.public)
    with pytest.raises(TamperedMessageError):
        unseal(eve, sealed)


def test_every_flipped_bit_is_detected() -> None:
    bob = IdentityKeyPair.generate()
    sealed = seal(sender_account="alice", sender_device=DEVICE, inner=b"payload", recipient_identity=bob.public)
    for bit in range(8, len(sealed) * 8):  # byte 0 is the version: covered below
        tampered = bytearray(sealed)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CryptoError):
            unseal(bob, bytes(tampered))


def test_bad_input_gives_typed_errors() -> None:
    bob = IdentityKeyPair.generate()
    sealed = seal(sender_account="alice", sender_device=DEVICE, inner=b"x", recipient_identity=bob.public)
    with pytest.raises(UnsupportedVersionError):
        unseal(bob, b"\x04" + sealed[1:])
    with pytest.raises(MalformedMessageError):
        unseal(bob, sealed[:20])
    with pytest.raises(MalformedMessageError):
        seal(sender_account="", sender_device=DEVICE, inner=b"x", recipient_identity=bob.public)
    with pytest.raises(MalformedMessageError):
        seal(sender_account="alice", sender_device="not-hex", inner=b"x", recipient_identity=bob.public)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_the_error_tree(data: bytes) -> None:
    bob = IdentityKeyPair.generate()
    try:
        unseal(bob, data)
    except CryptoError:
        pass
