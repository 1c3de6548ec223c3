"""Persistence: sessions and keys survive to_bytes/from_bytes, and blobs written by
format version 1 (committed fixture) still load and continue the conversation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xchat.client.crypto import (
    IdentityKeyPair,
    MalformedMessageError,
    Payload,
    PrekeyStore,
    Session,
    UnsupportedVersionError,
    open_message,
)

FIXTURE = Path(__file__).parent / "fixtures" / "sessions_v1.json"


@pytest.fixture
def v1() -> dict:
    return json.loads(FIXTURE.read_text())


def test_v1_sessions_load_and_continue(v1, make_payload) -> None:
    a = Session.from_bytes(bytes.fromhex(v1["alice_session"]))
    b = Session.from_bytes(bytes.fromhex(v1["bob_session"]))
    for item in v1["to_bob"]:  # one in flight, one from the stored skipped keys
        assert b.decrypt(bytes.fromhex(item["wire"])) == Payload.decode(bytes.fromhex(item["payload"]))
    for _ in range(3):
        assert a.decrypt(b.encrypt(make_payload(b"pong"))).body == b"pong"
        assert b.decrypt(a.encrypt(make_payload(b"ping"))).body == b"ping"


def test_v1_prekey_store_answers_a_saved_initiator(v1, make_payload) -> None:
    bob = IdentityKeyPair.from_bytes(bytes.fromhex(v1["bob_identity"]))
    store = PrekeyStore.from_bytes(bytes.fromhex(v1["bob_store"]), bob)
    carol_session = Session.from_bytes(bytes.fromhex(v1["carol_session"]))
    assert carol_session.awaiting_reply
    first = v1["carol_first"]
    opened = open_message(bytes.fromhex(first["wire"]), our_identity=bob, prekey_store=store)
    assert opened.new_session
    assert opened.payload == Payload.decode(bytes.fromhex(first["payload"]))
    carol = IdentityKeyPair.from_bytes(bytes.fromhex(v1["carol_identity"]))
    assert opened.session.their_identity_key == carol.public
    assert carol_session.decrypt(opened.session.encrypt(make_payload(b"welcome"))).body == b"welcome"
    assert not carol_session.awaiting_reply


def test_session_round_trip_mid_conversation(conversation, make_payload) -> None:
    a, b = conversation.a, conversation.b
    late = a.encrypt(make_payload(b"late"))
    b.decrypt(a.encrypt(make_payload()))
    a2, b2 = Session.from_bytes(a.to_bytes()), Session.from_bytes(b.to_bytes())
    assert b2.to_bytes() == b.to_bytes()
    assert b2.decrypt(late).body == b"late"
    assert a2.decrypt(b2.encrypt(make_payload(b"x"))).body == b"x"


def test_bad_session_blobs(conversation) -> None:
    blob = conversation.a.to_bytes()
    with pytest.raises(UnsupportedVersionError) as info:
        Session.from_bytes(b"\xff" + blob[1:])
    assert info.value.what == "session"
    with pytest.raises(MalformedMessageError):
        Session.from_bytes(blob + b"\x00")
    for n in range(len(blob)):
        with pytest.raises(MalformedMessageError):
            Session.from_bytes(blob[:n])
