"""Property tests of the SDK's receive path against a malicious server or sender (issue 17).

A malicious mailbox can answer ``Sync`` with any envelopes (any message id,
sequence and ciphertext); a malicious sender can seal anything to our
identity key (it is public), so the sealed layer's *plaintext* is attacker
chosen too; a malicious keys service can answer ``FetchBundles`` with any
bundle. For all of them:

* nothing escapes but the SDK's typed errors (``CryptoError`` for bundles;
  the receive path raises nothing and reports ``Undecryptable``);
* nothing malformed is stored: sessions, prekeys and the inbox are
  byte-for-byte unchanged, and the envelope is acknowledged (so it is not
  redelivered for ever) without reaching the app;
* the genuine conversation still works afterwards.

In memory (SQLite in a temporary folder), no network; derandomized.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xchat.client._codec import bundle as bundle_from_pb
from xchat.client._receiving import Receiver
from xchat.client._sessions import SessionBook
from xchat.client._state import LocalState
from xchat.client.crypto import CryptoError, PrekeyBundle, unseal
from xchat.client.crypto.encoding import Writer
from xchat.client.crypto.primitives import (
    aead_encrypt,
    ed25519_public_to_x25519,
    x25519,
    x25519_generate,
    x25519_public_bytes,
)
from xchat.client.crypto.sealed import SEALED_VERSION, _key
from xchat.v1 import common_pb2, keys_pb2, mailbox_pb2

PROPERTY = settings(
    max_examples=120,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ALICE, ALICE_DEV = "alice", "a" * 32
BOB_DEV = "b" * 32


class World:
    """Bob's SDK state with no session yet, and genuine envelopes from Alice to mutate."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.events: list[object] = []
        alice_state = LocalState(folder / "alice.db")
        self.bob_state = LocalState(folder / "bob.db")
        self.alice, self.bob = SessionBook(alice_state), SessionBook(self.bob_state, on_event=self.events.append)
        self.alice.ensure_identity()
        self.bob.ensure_identity()
        self.bob.new_prekeys(one_time=2, pq=2, rotate_signed=True)
        self.bundle = PrekeyBundle.from_store(self.bob.prekeys)
        self.alice.start_sessions("bob", [(BOB_DEV, self.bundle)])
        # PREKEY messages (Bob has no session): each would start one.
        self.genuine = [
            self.alice.encrypt(sender=(ALICE, ALICE_DEV), account="bob", devices=[BOB_DEV], body=body, content_type="text/plain")[0]
            for body in (b"first", b"second")
        ]

    def snapshot(self) -> tuple[object, ...]:
        db: sqlite3.Connection = self.bob_state._db  # noqa: SLF001
        return (
            db.execute("SELECT peer_device, peer_account, state FROM sessions ORDER BY peer_device").fetchall(),
            db.execute("SELECT message_id, payload FROM inbox ORDER BY message_id").fetchall(),
            db.execute("SELECT key, value FROM meta WHERE key != 'schema_version' ORDER BY key").fetchall(),
        )

    async def directory_key(self, account: str, device: str) -> bytes | None:
        """The directory's answer: Alice's device key, nothing for anyone else."""
        return self.alice.identity.public if (account, device) == (ALICE, ALICE_DEV) else None

    def receiver(self) -> Receiver:
        return Receiver(
            self.bob_state,
            self.bob,
            transport=None,  # type: ignore[arg-type] - a batch's decryption makes no call
            tokens=None,  # type: ignore[arg-type]
            backlog_done=asyncio.Event(),
            directory_key=self.directory_key,
            on_new_session=lambda: None,
        )


@functools.cache
def _world() -> World:
    return World(Path(tempfile.mkdtemp(prefix="xchat-receive-props-")))


@pytest.fixture(autouse=True, scope="module")
def _close_the_world() -> Iterator[None]:
    """The world is shared by the module's examples (strategies need it at import); removed after."""
    yield
    if _world.cache_info().currsize:
        world = _world()
        world.alice._state.close()  # noqa: SLF001
        world.bob_state.close()
        shutil.rmtree(world.folder, ignore_errors=True)
        _world.cache_clear()


def _open(world: World, envelopes: list[mailbox_pb2.Envelope]) -> tuple[list[object], list[int]]:
    receiver = world.receiver()

    async def run() -> list[object]:
        committed = await receiver._commit_batch(envelopes)  # noqa: SLF001
        await world.bob_state.sync()
        return list(receiver._released(committed))  # noqa: SLF001

    messages = asyncio.run(run())
    return messages, list(receiver._outgoing)  # noqa: SLF001


def _raw_seal(body: bytes, recipient_identity: bytes) -> bytes:
    """A sealed envelope with an attacker-chosen plaintext: what any sender can make."""
    ephemeral = x25519_generate()
    public = x25519_public_bytes(ephemeral)
    shared = x25519(ephemeral, ed25519_public_to_x25519(recipient_identity, "recipient"))
    header = bytes([SEALED_VERSION]) + public
    return header + aead_encrypt(_key(shared, public, recipient_identity), body, header + recipient_identity)


def _assert_refused(world: World, envelopes: list[mailbox_pb2.Envelope]) -> None:
    before = world.snapshot()
    messages, acked = _open(world, envelopes)
    assert messages == [], "a malformed envelope reached the app"
    assert world.snapshot() == before, "a malformed envelope changed the stored state"
    assert sorted(acked) == sorted(e.sequence for e in envelopes), "refused envelopes are acknowledged"


edits = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4)


@PROPERTY
@given(st.lists(st.tuples(st.binary(max_size=20), st.integers(1, 2**64 - 1), st.binary(max_size=600)), min_size=1, max_size=4))
def test_a_malicious_mailbox_cannot_store_anything_with_arbitrary_envelopes(raw: list[tuple[bytes, int, bytes]]) -> None:
    world = _world()
    envelopes = [mailbox_pb2.Envelope(message_id=m, sequence=s, ciphertext=c) for m, s, c in raw]
    _assert_refused(world, envelopes)


@PROPERTY
@given(st.integers(0, 1), edits, st.integers(min_value=0), st.booleans(), st.booleans())
def test_mutated_genuine_envelopes_are_refused_and_change_nothing(
    which: int, changes: list[tuple[int, int]], cut: int, truncate: bool, keep_id: bool
) -> None:
    world = _world()
    item = world.genuine[which]
    data = bytearray(item.ciphertext)
    for position, value in changes:
        data[position % len(data)] = value
    if truncate:
        data = data[: cut % (len(data) + 1)]
    if bytes(data) == item.ciphertext:
        return
    mid = item.message_id if keep_id else bytes(16)
    _assert_refused(world, [mailbox_pb2.Envelope(message_id=mid, sequence=7, ciphertext=bytes(data))])


@st.composite
def _sealed_plaintexts(draw: st.DrawFn) -> bytes:
    """The sealed layer's plaintext, as a malicious sender may write it: often nearly right."""
    world = _world()
    account = draw(st.binary(max_size=40) | st.sampled_from([b"alice", b"bob", b"\xff\xfe", b"a\x00b", b"a" * 32]))
    size = draw(st.integers(0, 255) | st.just(len(account)))
    device = draw(st.binary(min_size=16, max_size=16) | st.just(bytes.fromhex(ALICE_DEV)) | st.binary(max_size=20))
    kind = draw(st.sampled_from(["garbage", "mutated-inner", "genuine-inner-forged-claim"]))
    if kind == "garbage":
        inner = bytearray(draw(st.binary(max_size=400)))
    else:
        # The inner PREKEY message of a genuine envelope, recovered by unsealing it as Bob.
        inner = bytearray(unseal(world.bob.identity, world.genuine[0].ciphertext).inner)
        if kind == "mutated-inner":
            for position, value in draw(edits):
                inner[position % len(inner)] = value
    return Writer().u8(size % 256).raw(account).raw(device).raw(bytes(inner)).getvalue()


@PROPERTY
@given(_sealed_plaintexts(), st.booleans())
def test_a_malicious_sender_cannot_store_anything_through_the_sealed_layer(body: bytes, right_id: bool) -> None:
    """Any plaintext inside a genuinely sealed envelope: refused unless it is exactly Alice's own message."""
    world = _world()
    genuine_inner = unseal(world.bob.identity, world.genuine[0].ciphertext).inner
    genuine_body = Writer().u8(len(ALICE)).raw(ALICE.encode()).raw(bytes.fromhex(ALICE_DEV)).raw(genuine_inner).getvalue()
    if body == genuine_body:
        return
    mid = world.genuine[0].message_id if right_id else b"\x01" * 16
    _assert_refused(world, [mailbox_pb2.Envelope(message_id=mid, sequence=9, ciphertext=_raw_seal(body, world.bob.identity.public))])


def test_after_the_attacks_the_genuine_messages_still_open() -> None:
    world = _world()
    envelopes = [mailbox_pb2.Envelope(message_id=i.message_id, sequence=n + 100, ciphertext=i.ciphertext) for n, i in enumerate(world.genuine)]
    before = world.snapshot()
    messages, _ = _open(world, envelopes)
    assert [m.body for m in messages] == [b"first", b"second"]  # type: ignore[attr-defined]
    assert all(m.sender_account == ALICE for m in messages)  # type: ignore[attr-defined]
    assert world.snapshot() != before
    # And a copy redelivered by the server is not shown twice.
    again, acked = _open(world, envelopes[:1])
    assert [m.body for m in again] == [b"first"] or again == []  # type: ignore[attr-defined]


# -- bundles from a malicious keys service --------------------------------------------------


def _signed(kid: int, public: bytes, sig: bytes) -> common_pb2.SignedPrekey:
    return common_pb2.SignedPrekey(key_id=kid, public_key=public, signature=sig)


def _genuine_bundle_pb() -> keys_pb2.PrekeyBundle:
    b = _world().bundle
    pb = keys_pb2.PrekeyBundle(
        account="bob",
        device_id=BOB_DEV,
        identity_key=b.identity_key,
        signed_prekey=_signed(b.signed_prekey.key_id, b.signed_prekey.public, b.signed_prekey.signature),
        pq_prekey=_signed(b.pq_prekey.key_id, b.pq_prekey.public, b.pq_prekey.signature),
        pq_prekey_is_last_resort=b.pq_prekey.last_resort,
    )
    if b.one_time_prekey is not None:
        pb.one_time_prekey.CopyFrom(common_pb2.OneTimePrekey(key_id=b.one_time_prekey.key_id, public_key=b.one_time_prekey.public))
    return pb


key_bytes = st.binary(max_size=40) | st.binary(min_size=1184, max_size=1184) | st.binary(min_size=64, max_size=64)


@PROPERTY
@given(
    key_bytes,
    st.tuples(st.integers(0, 2**32 - 1), key_bytes, key_bytes),
    st.tuples(st.integers(0, 2**32 - 1), key_bytes, key_bytes),
    st.none() | st.tuples(st.integers(0, 2**32 - 1), key_bytes),
    st.booleans(),
)
def test_an_arbitrary_bundle_is_a_crypto_error(ik, spk, pq, otk, last_resort) -> None:  # type: ignore[no-untyped-def]
    pb = keys_pb2.PrekeyBundle(
        identity_key=ik, signed_prekey=_signed(*spk), pq_prekey=_signed(*pq), pq_prekey_is_last_resort=last_resort
    )
    if otk is not None:
        pb.one_time_prekey.CopyFrom(common_pb2.OneTimePrekey(key_id=otk[0], public_key=otk[1]))
    try:
        bundle_from_pb(pb)
    except CryptoError:
        return
    raise AssertionError("a bundle of random keys verified")


@PROPERTY
@given(
    st.sampled_from(["identity_key", "signed_prekey.public_key", "signed_prekey.signature", "signed_prekey.key_id",
                     "pq_prekey.public_key", "pq_prekey.signature", "pq_prekey.key_id", "pq_prekey_is_last_resort"]),
    st.integers(min_value=0),
    st.integers(1, 255),
)
def test_a_bundle_altered_in_any_signed_field_is_refused(field: str, position: int, xor: int) -> None:
    pb = _genuine_bundle_pb()
    assert isinstance(bundle_from_pb(pb), PrekeyBundle)
    target, _, name = field.rpartition(".")
    message = getattr(pb, target) if target else pb
    value = getattr(message, name)
    if isinstance(value, bool):
        setattr(message, name, not value)
    elif isinstance(value, int):
        setattr(message, name, (value ^ xor) % 2**32)
    else:
        data = bytearray(value)
        data[position % len(data)] ^= xor
        setattr(message, name, bytes(data))
    try:
        bundle_from_pb(pb)
    except CryptoError:
        return
    raise AssertionError(f"a bundle with {field} altered verified")


def test_any_uint64_sequence_is_acknowledged_and_kept_pending(tmp_path: Path) -> None:
    """Regression: a sequence >= 2**63 (protobuf uint64; SQLite stores signed 64-bit)
    raised OverflowError out of the receive loop, again on every reconnect."""
    state = LocalState(tmp_path / "s.db")
    top = [0, 1, 2**63 - 1, 2**63, 2**64 - 1]
    state.add_pending_acks(top)
    assert state.pending_acks() == top
    state.remove_pending_acks([2**63, 1])
    assert state.pending_acks() == [0, 2**63 - 1, 2**64 - 1]
    world = _world()
    envelope = mailbox_pb2.Envelope(message_id=b"\x02" * 16, sequence=2**64 - 1, ciphertext=b"junk")
    assert _open(world, [envelope]) == ([], [2**64 - 1])
    assert 2**64 - 1 in world.bob_state.pending_acks()
