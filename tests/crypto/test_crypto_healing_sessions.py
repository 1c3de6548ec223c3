"""Sessions that heal, in memory: the ratchet's skip bound and skipped-key time-to-live,
the copy-free common decrypt path, and session records (archived sessions, promotion,
crossed first messages) through ``open_record``."""

from __future__ import annotations

import pytest

from xchat.client.crypto import (
    CryptoError,
    Payload,
    ReplayedMessageError,
    Session,
    TamperedMessageError,
    TooManySkippedMessagesError,
    initiate_session,
)
from xchat.client.crypto.ratchet import MAX_SKIP, SKIPPED_KEY_TTL_MS, RatchetState
from xchat.client.crypto.sessions import ARCHIVED_SESSIONS_MAX, SessionRecord, open_record

from .conftest import Party, new_party, payload

T0 = 1_800_000_000_000  # a fixed "now", ms


def test_a_gap_beyond_the_old_bound_of_1000_opens(conversation) -> None:
    a, b = conversation.a, conversation.b
    for _ in range(4000):
        a.encrypt(payload())  # refused by a full mailbox and dropped by the sender
    assert b.decrypt(a.encrypt(payload(b"after the gap"))).body == b"after the gap"


def test_a_gap_beyond_the_bound_is_refused_and_keeps_the_state(conversation) -> None:
    a, b = conversation.a, conversation.b
    for _ in range(MAX_SKIP + 1):
        a.encrypt(payload())
    before = b.to_bytes()
    with pytest.raises(TooManySkippedMessagesError):
        b.decrypt(a.encrypt(payload()))
    assert b.to_bytes() == before


def test_skipped_keys_expire_after_their_time_to_live(conversation) -> None:
    a, b = conversation.a, conversation.b
    late, kept = a.encrypt(payload(b"late")), a.encrypt(payload(b"kept"))
    b.decrypt(a.encrypt(payload()), now_ms=T0)  # skips both: stored, dated T0
    assert len(b._state.skipped) == 2
    assert b.decrypt(kept, now_ms=T0 + SKIPPED_KEY_TTL_MS).body == b"kept"  # at the limit: still held
    with pytest.raises(ReplayedMessageError):
        b.decrypt(late, now_ms=T0 + SKIPPED_KEY_TTL_MS + 1)
    # The expired key is deleted by the next message, not only ignored.
    b.decrypt(a.encrypt(payload()), now_ms=T0 + SKIPPED_KEY_TTL_MS + 1)
    assert len(b._state.skipped) == 0
    assert not Session.from_bytes(b.to_bytes())._state.skipped


def test_in_order_messages_never_copy_the_state(conversation, monkeypatch) -> None:
    a, b = conversation.a, conversation.b
    a.encrypt(payload())  # one skipped key, so the state is not trivially small
    b.decrypt(a.encrypt(payload()))

    def no_copy(self: RatchetState) -> RatchetState:
        raise AssertionError("the common path copied the state")

    monkeypatch.setattr(RatchetState, "copy", no_copy)
    for i in range(5):
        assert b.decrypt(a.encrypt(payload(b"%d" % i))).body == b"%d" % i
    # A tampered in-order message leaves the state as it was, without a copy either.
    wire = bytearray(a.encrypt(payload(b"genuine")))
    before = b.to_bytes()
    wire[-1] ^= 1
    with pytest.raises(TamperedMessageError):
        b.decrypt(bytes(wire))
    assert b.to_bytes() == before


def test_session_format_1_still_reads() -> None:
    alice, bob = new_party(), new_party()
    a, _ = initiate_session(alice.identity, bob.bundle())
    blob = a.to_bytes()
    assert blob[0] == 3
    # Formats 1 and 2 are format 3 without bound ids (here none: one zero length byte at 98);
    # format 1 also without skipped-key dates: equal when nothing is skipped.
    legacy = blob[1:98] + blob[99:]
    assert blob[98] == 0
    assert Session.from_bytes(b"\x02" + legacy).to_bytes() == blob
    assert Session.from_bytes(b"\x01" + legacy).to_bytes() == blob


# -- records ----------------------------------------------------------------


def _open(party: Party, record: SessionRecord | None, wire: bytes) -> tuple[SessionRecord, Payload, bool]:
    opened = open_record(wire, our_identity=party.identity, prekey_store=party.store, record=record)
    return opened.record, opened.payload, opened.promoted


def test_crossed_first_messages_converge_and_nothing_is_lost() -> None:
    alice, bob = new_party(), new_party()
    a_session, _ = initiate_session(alice.identity, bob.bundle())
    b_session, _ = initiate_session(bob.identity, alice.bundle())
    a_record, b_record = SessionRecord(a_session), SessionRecord(b_session)
    # Both send before either receives, then receive each other's first message.
    to_bob, to_alice = a_record.current.encrypt(payload(b"a0")), b_record.current.encrypt(payload(b"b0"))
    b_record, got, _ = _open(bob, b_record, to_bob)
    assert got.body == b"a0" and b_record.archived_count == 1
    a_record, got, _ = _open(alice, a_record, to_alice)
    assert got.body == b"b0" and a_record.archived_count == 1
    # Now each side's current session is the one the other started: 20 rounds
    # of messages in flight both ways at once all open.
    for i in range(20):
        to_bob, to_alice = a_record.current.encrypt(payload(b"a%d" % i)), b_record.current.encrypt(payload(b"b%d" % i))
        b_record, got, _ = _open(bob, b_record, to_bob)
        assert got.body == b"a%d" % i
        a_record, got, _ = _open(alice, a_record, to_alice)
        assert got.body == b"b%d" % i
    # Quiet again: one exchange settles both on the same session.
    b_record, _, _ = _open(bob, b_record, a_record.current.encrypt(payload(b"x")))
    a_record, _, _ = _open(alice, a_record, b_record.current.encrypt(payload(b"y")))
    assert a_record.current.associated_data == b_record.current.associated_data


def test_a_late_message_of_a_replaced_session_opens_and_is_promoted(conversation) -> None:
    alice, bob, a = conversation.alice, conversation.bob, conversation.a
    record = SessionRecord(conversation.b)
    late = a.encrypt(payload(b"late"))
    # Alice starts over (e.g. after a reset): Bob's old session is archived.
    a2, _ = initiate_session(alice.identity, bob.bundle())
    record, got, _ = _open(bob, record, a2.encrypt(payload(b"new")))
    assert got.body == b"new" and record.archived_count == 1
    record, got, promoted = _open(bob, record, late)
    assert got.body == b"late" and promoted
    assert record.current.initial_digest == conversation.b.initial_digest


def test_an_archived_session_under_another_identity_opens_but_is_not_promoted(conversation) -> None:
    bob, a = conversation.bob, conversation.a
    record = SessionRecord(conversation.b)
    late = a.encrypt(payload(b"late"))
    reinstalled = new_party()  # same device, new identity key
    fresh, _ = initiate_session(reinstalled.identity, bob.bundle())
    record, _, _ = _open(bob, record, fresh.encrypt(payload(b"hi")))
    record, got, promoted = _open(bob, record, late)
    assert got.body == b"late" and not promoted
    assert record.current.their_identity_key == reinstalled.identity.public


def test_records_keep_a_bounded_archive_and_round_trip() -> None:
    alice, bob = new_party(one_time=20, pq=20), new_party(one_time=20, pq=20)
    record: SessionRecord | None = None
    for i in range(ARCHIVED_SESSIONS_MAX + 5):
        session, _ = initiate_session(alice.identity, bob.bundle())
        record, _, _ = _open(bob, record, session.encrypt(payload(b"%d" % i)))
    assert record is not None and record.archived_count == ARCHIVED_SESSIONS_MAX
    blob = record.to_bytes()
    assert SessionRecord.from_bytes(blob).to_bytes() == blob
    # A bare session (what earlier SDKs stored) reads as a record without archive.
    bare = SessionRecord.from_bytes(record.current.to_bytes())
    assert bare.archived_count == 0 and bare.current.to_bytes() == record.current.to_bytes()
    with pytest.raises(CryptoError):
        SessionRecord.from_bytes(blob[:-1])


def test_garbage_is_tried_everywhere_and_changes_nothing(conversation) -> None:
    alice, bob, a = conversation.alice, conversation.bob, conversation.a
    a2, _ = initiate_session(alice.identity, bob.bundle())
    record, _, _ = _open(bob, SessionRecord(conversation.b), a2.encrypt(payload()))
    wire = bytearray(a.encrypt(payload(b"genuine")))
    wire[-1] ^= 1
    before = record.to_bytes()
    with pytest.raises(CryptoError):
        _open(bob, record, bytes(wire))
    assert record.to_bytes() == before
    # A replayed message of the current session stays a replay.
    genuine = a2.encrypt(payload(b"once"))
    record, _, _ = _open(bob, record, genuine)
    with pytest.raises(ReplayedMessageError):
        _open(bob, record, genuine)
