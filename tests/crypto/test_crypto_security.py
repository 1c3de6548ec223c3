"""Forward secrecy, post-compromise security, tampering and replay."""

from __future__ import annotations

import random

import pytest

from xchat.client.crypto import (
    MAX_SKIP,
    CryptoError,
    DecryptionError,
    MalformedMessageError,
    PrekeyStore,
    ReplayedMessageError,
    Session,
    TamperedMessageError,
    TooManySkippedMessagesError,
    UnsupportedVersionError,
    initiate_session,
    open_message,
    respond_to_session,
)
from xchat.client.crypto.wire import parse_wire

HEADER_START = 2  # version, type; NORMAL messages carry no initial message


def test_forward_secrecy_old_messages_unreadable_with_current_state(conversation, make_payload) -> None:
    a, b = conversation.a, conversation.b
    captured = []
    for _ in range(3):
        for _ in range(3):
            wire = a.encrypt(make_payload(b"secret"))
            captured.append(wire)
            b.decrypt(wire)
        a.decrypt(b.encrypt(make_payload()))
    # The attacker now obtains Bob's complete session state.
    leaked = b.to_bytes()
    for wire in captured:
        with pytest.raises(ReplayedMessageError):
            Session.from_bytes(leaked).decrypt(wire)
    # The used message keys themselves are nowhere in the state.
    assert b._state.skipped == {}


def test_post_compromise_security_after_dh_round_trip(conversation, make_payload) -> None:
    a, b = conversation.a, conversation.b
    leaked = b.to_bytes()
    # Sanity: the compromise is real — the current chain is readable with the leak.
    same_chain = a.encrypt(make_payload(b"still exposed"))
    assert Session.from_bytes(leaked).decrypt(same_chain).body == b"still exposed"
    b.decrypt(same_chain)
    # Healing: one round trip of fresh DH ratchet keys the attacker never saw.
    a.decrypt(b.encrypt(make_payload()))
    b.decrypt(a.encrypt(make_payload()))
    a.decrypt(b.encrypt(make_payload()))
    later_to_bob = a.encrypt(make_payload(b"healed"))
    later_to_alice = b.encrypt(make_payload(b"healed too"))
    with pytest.raises(DecryptionError):
        Session.from_bytes(leaked).decrypt(later_to_bob)
    attacker_view = Session.from_bytes(leaked)
    with pytest.raises(CryptoError):
        attacker_view.decrypt(later_to_alice)  # not even addressed to that state
    assert b.decrypt(later_to_bob).body == b"healed"
    assert a.decrypt(later_to_alice).body == b"healed too"


def _expected_error(wire: bytes, flipped: bytes, nr: int) -> type[CryptoError]:
    """The specific error a single flipped bit must cause in a NORMAL message."""
    if flipped[0] != wire[0]:
        return UnsupportedVersionError
    if flipped[1] != wire[1]:
        return MalformedMessageError
    original, forged = parse_wire(wire).header, parse_wire(flipped).header
    if forged.n != original.n:
        if forged.n < nr:
            return ReplayedMessageError
        if forged.n - nr > MAX_SKIP:
            return TooManySkippedMessagesError
    return TamperedMessageError


def test_every_bit_flip_of_a_normal_message_is_rejected_specifically(conversation, make_payload) -> None:
    a, b = conversation.a, conversation.b
    for _ in range(5):  # a non-trivial position in the receiving chain
        b.decrypt(a.encrypt(make_payload()))
    genuine_payload = make_payload(b"the genuine one")
    wire = a.encrypt(genuine_payload)
    nr = b._state.nr
    before = b.to_bytes()
    for bit in range(len(wire) * 8):
        flipped = bytearray(wire)
        flipped[bit // 8] ^= 1 << (bit % 8)
        expected = _expected_error(wire, bytes(flipped), nr)
        with pytest.raises(CryptoError) as info:
            b.decrypt(bytes(flipped))
        assert type(info.value) is expected, (bit, info.value)
        assert b.to_bytes() == before, bit
    assert b.decrypt(wire) == genuine_payload


def test_bit_flips_in_prekey_message_leave_store_and_nothing_created(party, make_payload) -> None:
    alice, bob = party(), party()
    a, _ = initiate_session(alice.identity, bob.bundle())
    first = make_payload(b"first")
    wire = a.encrypt(first)
    store_before = bob.store.to_bytes()
    rng = random.Random(7)
    bits = list(range(16 * 8)) + rng.sample(range(16 * 8, len(wire) * 8), 150)
    for bit in bits:
        flipped = bytearray(wire)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CryptoError):
            respond_to_session(bob.identity, bob.store, bytes(flipped))
        assert bob.store.to_bytes() == store_before, bit
    b, got = respond_to_session(bob.identity, bob.store, wire)
    assert got == first


def test_replay_of_normal_message_is_rejected(conversation, make_payload) -> None:
    a, b = conversation.a, conversation.b
    wire = a.encrypt(make_payload())
    b.decrypt(wire)
    before = b.to_bytes()
    with pytest.raises(ReplayedMessageError):
        b.decrypt(wire)
    assert b.to_bytes() == before


def test_replay_of_skipped_then_delivered_message(conversation, make_payload) -> None:
    a, b = conversation.a, conversation.b
    early, late = a.encrypt(make_payload()), a.encrypt(make_payload())
    b.decrypt(late)
    b.decrypt(early)  # from the skipped-key store, which then forgets it
    for wire in (early, late):
        with pytest.raises(ReplayedMessageError):
            b.decrypt(wire)


def test_replay_from_an_earlier_chain(conversation, make_payload) -> None:
    a, b = conversation.a, conversation.b
    old = a.encrypt(make_payload())
    b.decrypt(old)
    a.decrypt(b.encrypt(make_payload()))
    b.decrypt(a.encrypt(make_payload()))  # Bob is on a newer receiving chain now
    with pytest.raises(ReplayedMessageError):
        b.decrypt(old)


def test_replay_of_prekey_message_with_and_without_session(party, make_payload) -> None:
    alice, bob = party(), party()
    a, _ = initiate_session(alice.identity, bob.bundle())
    wire = a.encrypt(make_payload())
    opened = open_message(wire, our_identity=bob.identity, prekey_store=bob.store)
    assert opened.new_session
    # Same session: the message key is gone.
    with pytest.raises(ReplayedMessageError):
        open_message(wire, our_identity=bob.identity, prekey_store=bob.store, session=opened.session)
    # Session lost (or attacker replays to a fresh install of the state): the
    # one-time prekey was consumed, and the store remembers that.
    with pytest.raises(ReplayedMessageError):
        respond_to_session(bob.identity, bob.store, wire)
    restored = PrekeyStore.from_bytes(bob.store.to_bytes(), bob.identity)
    with pytest.raises(ReplayedMessageError):
        respond_to_session(bob.identity, restored, wire)


def test_prekey_messages_until_reply_then_normal(party, make_payload) -> None:
    alice, bob = party(), party()
    a, _ = initiate_session(alice.identity, bob.bundle())
    w1, w2 = a.encrypt(make_payload()), a.encrypt(make_payload())
    assert w1[1] == w2[1] == 1  # PREKEY while awaiting a reply
    # Offline recipient, first message lost: the second alone starts the session.
    opened = open_message(w2, our_identity=bob.identity, prekey_store=bob.store)
    late = open_message(w1, our_identity=bob.identity, prekey_store=bob.store, session=opened.session)
    assert not late.new_session
    a.decrypt(opened.session.encrypt(make_payload()))
    assert not a.awaiting_reply and a.encrypt(make_payload())[1] == 2


def test_forged_message_under_responders_signed_prekey(party, make_payload) -> None:
    """The initiator's first DHr (SPK_B) has no receiving chain: a header naming it is forged."""
    alice, bob = party(), party()
    bundle = bob.bundle()
    a, _ = initiate_session(alice.identity, bundle)
    real = a.encrypt(make_payload())
    b, _ = respond_to_session(bob.identity, bob.store, real)
    reply = bytearray(b.encrypt(make_payload()))
    reply[2:34] = bundle.signed_prekey.public  # header.dh := SPK_B
    before = a.to_bytes()
    with pytest.raises(TamperedMessageError):
        a.decrypt(bytes(reply))
    assert a.to_bytes() == before
