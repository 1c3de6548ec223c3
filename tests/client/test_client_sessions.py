"""SessionBook: the SDK's end-to-end state over SQLite, in memory, no network."""

from __future__ import annotations

from pathlib import Path

from xchat.client._sessions import SessionBook
from xchat.client._state import LocalState
from xchat.client.crypto import PrekeyBundle
from xchat.client.messages import SenderMismatch, Undecryptable

ALICE_DEV = "a" * 32
BOB_DEV = "b" * 32


def _pair(tmp_path: Path) -> tuple[SessionBook, SessionBook, LocalState, LocalState]:
    alice_state, bob_state = LocalState(tmp_path / "a.db"), LocalState(tmp_path / "b.db")
    alice, bob = SessionBook(alice_state), SessionBook(bob_state)
    alice.ensure_identity()
    bob.ensure_identity()
    bob.new_prekeys(one_time=3, pq=3, rotate_signed=True)
    alice.start_sessions("bob", [(BOB_DEV, PrekeyBundle.from_store(bob.prekeys))])
    return alice, bob, alice_state, bob_state


def test_round_trip_commits_session_prekeys_and_inbox_atomically(tmp_path: Path) -> None:
    alice, bob, _, bob_state = _pair(tmp_path)
    [item] = alice.encrypt(sender=("alice", ALICE_DEV), account="bob", devices=[BOB_DEV], body=b"hi", content_type="text/plain")
    opened = bob.open(item.message_id, item.ciphertext)
    assert opened is not None and opened.new_session
    assert opened.content.sender_account == "alice" and opened.content.sender_device == ALICE_DEV
    inbox = bob.commit(opened)
    assert bob_state.inbox_item(item.message_id) == inbox
    # A restarted book (new process) continues the conversation from SQLite alone.
    bob_again = SessionBook(LocalState(tmp_path / "b.db"))
    [second] = alice.encrypt(sender=("alice", ALICE_DEV), account="bob", devices=[BOB_DEV], body=b"again", content_type="text/plain")
    reopened = bob_again.open(second.message_id, second.ciphertext)
    assert reopened is not None and not reopened.new_session


def test_an_uncommitted_open_can_be_forgotten_and_the_redelivery_still_decrypts(tmp_path: Path) -> None:
    """The drill-found bug: an interrupted receive must not burn the one-time prekey."""
    alice, bob, _, _ = _pair(tmp_path)
    [item] = alice.encrypt(sender=("alice", ALICE_DEV), account="bob", devices=[BOB_DEV], body=b"x", content_type="text/plain")
    assert bob.open(item.message_id, item.ciphertext) is not None
    bob.forget()  # e.g. the directory lookup was cancelled
    again = bob.open(item.message_id, item.ciphertext)
    assert again is not None, "redelivered copy decrypts"
    bob.commit(again)
    assert bob.undecryptable == 0


def test_garbage_and_mismatched_ids_are_counted_not_raised(tmp_path: Path) -> None:
    alice, bob, _, _ = _pair(tmp_path)
    assert bob.open(b"\x00" * 16, b"not a sealed envelope") is None
    [item] = alice.encrypt(sender=("alice", ALICE_DEV), account="bob", devices=[BOB_DEV], body=b"x", content_type="text/plain")
    assert bob.open(b"\x01" * 16, item.ciphertext) is None, "outer id must match the inner one"
    assert bob.undecryptable == 2
    assert bob.open(item.message_id, item.ciphertext) is not None, "the mismatch consumed nothing"


def test_a_session_claiming_another_account_is_refused_and_reported(tmp_path: Path) -> None:
    alice_state, bob_state = LocalState(tmp_path / "a.db"), LocalState(tmp_path / "b.db")
    events: list[object] = []
    alice, bob = SessionBook(alice_state), SessionBook(bob_state, on_event=events.append)
    alice.ensure_identity()
    bob.ensure_identity()
    bob.new_prekeys(one_time=3, pq=3, rotate_signed=True)
    alice.start_sessions("bob", [(BOB_DEV, PrekeyBundle.from_store(bob.prekeys))])
    [first] = alice.encrypt(sender=("alice", ALICE_DEV), account="bob", devices=[BOB_DEV], body=b"hi", content_type="text/plain")
    bob.commit(bob.open(first.message_id, first.ciphertext))  # type: ignore[arg-type]
    [forged] = alice.encrypt(sender=("carol", ALICE_DEV), account="bob", devices=[BOB_DEV], body=b"x", content_type="text/plain")
    assert bob.open(forged.message_id, forged.ciphertext) is None
    assert events == [SenderMismatch(forged.message_id, ALICE_DEV, "alice", "carol")]
    assert bob_state.session_account(ALICE_DEV) == "alice" and bob_state.session_devices("carol") == []
    [genuine] = alice.encrypt(sender=("alice", ALICE_DEV), account="bob", devices=[BOB_DEV], body=b"y", content_type="text/plain")
    assert bob.open(genuine.message_id, genuine.ciphertext) is not None, "the refusal left the session usable"


def test_undecryptable_envelopes_are_reported_with_the_claimed_sender(tmp_path: Path) -> None:
    alice, bob, _, _ = _pair(tmp_path)
    events: list[Undecryptable] = []
    bob._on_event = events.append  # type: ignore[assignment]
    assert bob.open(b"\x00" * 16, b"not a sealed envelope") is None
    [item] = alice.encrypt(sender=("alice", ALICE_DEV), account="bob", devices=[BOB_DEV], body=b"x", content_type="text/plain")
    assert bob.open(b"\x01" * 16, item.ciphertext) is None
    assert [(e.message_id, e.sender_account, e.sender_device) for e in events] == [
        (b"\x00" * 16, None, None),
        (b"\x01" * 16, "alice", ALICE_DEV),
    ]
