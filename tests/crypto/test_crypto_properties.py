"""Property-based tests: parsers take arbitrary bytes and either parse or raise a
CryptoError — never struct.error, IndexError, ValueError, …; encodings round-trip."""

from __future__ import annotations

import functools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xchat.client.crypto import (
    MAX_BODY_SIZE,
    CryptoError,
    IdentityKeyPair,
    Payload,
    PrekeyBundle,
    PrekeyStore,
    Session,
    initiate_session,
    open_message,
    respond_to_session,
)
from xchat.client.crypto.wire import parse_wire

# database=None: no .hypothesis/ directory written into the repository.
SETTINGS = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@functools.cache
def _samples() -> dict[str, bytes]:
    """One valid encoding of each format, to mutate."""
    bob = IdentityKeyPair.generate()
    store = PrekeyStore(bob)
    store.generate_signed_prekey()
    store.generate_one_time_prekeys(1)
    store.generate_pq_prekeys(1)
    store.generate_last_resort_pq()
    bundle = PrekeyBundle.from_store(store)
    session, _ = initiate_session(IdentityKeyPair.generate(), bundle)
    wire = session.encrypt(Payload.new(b"sample", counter=1))
    return {
        "store": store.to_bytes(),
        "bundle": bundle.to_bytes(),
        "wire": wire,
        "payload": Payload.new(b"body", counter=3).encode(),
        "session": session.to_bytes(),
        "identity": bob.to_bytes(),
    }


@functools.cache
def _store_identity() -> IdentityKeyPair:
    return IdentityKeyPair.from_bytes(_samples()["identity"])


@functools.cache
def _live_pair() -> tuple[Session, Session]:
    bob = IdentityKeyPair.generate()
    store = PrekeyStore(bob)
    store.generate_signed_prekey()
    store.generate_last_resort_pq()
    a, _ = initiate_session(IdentityKeyPair.generate(), PrekeyBundle.from_store(store))
    b, _ = respond_to_session(bob, store, a.encrypt(Payload.new(b"hi", counter=0)))
    return a, b


def _parse_all(data: bytes) -> None:
    parsers = (
        Payload.decode,
        parse_wire,
        PrekeyBundle.from_bytes,
        Session.from_bytes,
        IdentityKeyPair.from_bytes,
        lambda blob: PrekeyStore.from_bytes(blob, _store_identity()),
    )
    for parse in parsers:
        try:
            parse(data)
        except CryptoError:
            pass


@SETTINGS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_parse_or_raise_crypto_error(data: bytes) -> None:
    _parse_all(data)


@SETTINGS
@given(
    st.sampled_from(["bundle", "wire", "payload", "session", "identity", "store"]),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(min_value=0),
    st.booleans(),
)
def test_mutated_valid_encodings_parse_or_raise_crypto_error(
    which: str, edits: list[tuple[int, int]], cut: int, truncate: bool
) -> None:
    data = bytearray(_samples()[which])
    for position, value in edits:
        data[position % len(data)] = value
    if truncate:
        data = data[: cut % (len(data) + 1)]
    _parse_all(bytes(data))


payloads = st.builds(
    Payload,
    message_id=st.binary(min_size=16, max_size=16),
    counter=st.integers(0, 2**64 - 1),
    sent_at_ms=st.integers(0, 2**64 - 1),
    content_type=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64),
    body=st.binary(max_size=4096),
)


@SETTINGS
@given(payloads)
def test_payload_round_trip(payload: Payload) -> None:
    assert Payload.decode(payload.encode()) == payload


def test_payload_bounds() -> None:
    big = Payload.new(b"\x00" * MAX_BODY_SIZE, counter=0)
    assert Payload.decode(big.encode()) == big
    for kwargs in (
        {"body": b"\x00" * (MAX_BODY_SIZE + 1)},
        {"content_type": ""},
        {"content_type": "x" * 65},
        {"content_type": "text plain"},
        {"counter": -1},
        {"counter": 2**64},
        {"message_id": b"short"},
    ):
        fields = {
            "message_id": b"\x00" * 16,
            "counter": 0,
            "sent_at_ms": 0,
            "content_type": "text/plain",
            "body": b"",
        } | kwargs
        try:
            Payload(**fields)  # type: ignore[arg-type]
        except CryptoError:
            continue
        raise AssertionError(f"accepted {kwargs}")
    oversize = bytearray(big.encode())
    body_len_at = 1 + 16 + 8 + 8 + 1 + len("text/plain")
    oversize[body_len_at : body_len_at + 4] = (MAX_BODY_SIZE + 1).to_bytes(4, "big")
    try:
        Payload.decode(bytes(oversize) + b"\x00")
    except CryptoError:
        pass
    else:
        raise AssertionError("oversized body accepted")


def test_encodings_round_trip() -> None:
    samples = _samples()
    assert PrekeyBundle.from_bytes(samples["bundle"]).to_bytes() == samples["bundle"]
    assert Session.from_bytes(samples["session"]).to_bytes() == samples["session"]
    assert PrekeyStore.from_bytes(samples["store"], _store_identity()).to_bytes() == samples["store"]


@SETTINGS
@given(payloads, st.booleans())
def test_wire_round_trip(payload: Payload, reply: bool) -> None:
    a, b = _live_pair()
    sender, receiver = (b, a) if reply else (a, b)
    wire = sender.encrypt(payload)
    message = parse_wire(wire)
    assert message.authenticated + message.ciphertext == wire
    assert message.header.dh == sender._state.dhs_public
    assert receiver.decrypt(wire) == payload


@functools.cache
def _receiver() -> tuple[IdentityKeyPair, PrekeyStore, Session, bytes, bytes]:
    """Bob with a store, a session to Alice, and one PREKEY and one NORMAL wire to mutate."""
    bob = IdentityKeyPair.generate()
    store = PrekeyStore(bob)
    store.generate_signed_prekey()
    store.generate_one_time_prekeys(2)
    store.generate_pq_prekeys(2)
    store.generate_last_resort_pq()
    a, _ = initiate_session(IdentityKeyPair.generate(), PrekeyBundle.from_store(store))
    prekey_wire = a.encrypt(Payload.new(b"one", counter=1))
    b, _ = respond_to_session(bob, store, a.encrypt(Payload.new(b"two", counter=2)))
    a.decrypt(b.encrypt(Payload.new(b"r", counter=1)))
    normal_wire = a.encrypt(Payload.new(b"three", counter=3))
    return bob, store, b, prekey_wire, normal_wire


@SETTINGS
@given(
    st.booleans(),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=3),
    st.integers(min_value=0),
    st.booleans(),
)
def test_mutated_messages_through_open_message_raise_only_crypto_errors(
    prekey: bool, edits: list[tuple[int, int]], cut: int, truncate: bool
) -> None:
    bob, store, session, prekey_wire, normal_wire = _receiver()
    data = bytearray(prekey_wire if prekey else normal_wire)
    original = bytes(data)
    for position, value in edits:
        data[position % len(data)] = value
    if truncate:
        data = data[: cut % (len(data) + 1)]
    if bytes(data) == original:
        return
    session_before, store_before = session.to_bytes(), store.to_bytes()
    try:
        open_message(bytes(data), our_identity=bob, prekey_store=store, session=session)
    except CryptoError:
        pass
    else:
        raise AssertionError("a mutated message was accepted")
    assert session.to_bytes() == session_before and store.to_bytes() == store_before
