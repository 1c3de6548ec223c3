"""Identity, prekeys and bundles: the server-facing signature contract, rotation,
consume-once, persistence, and typed errors on bad input."""

from __future__ import annotations

import dataclasses

import nacl.signing
import pytest

from xchat.client.crypto import (
    ED25519_PUBLIC_KEY_SIZE,
    MLKEM768_CIPHERTEXT_SIZE,
    MLKEM768_PUBLIC_KEY_SIZE,
    X25519_KEY_SIZE,
    BundleSignatureError,
    CryptoError,
    IdentityKeyPair,
    IdentityMismatchError,
    InvalidKeyError,
    KeyLengthError,
    MalformedMessageError,
    OneTimePrekey,
    PqPrekey,
    PrekeyBundle,
    PrekeyKind,
    PrekeyStore,
    SignedPrekey,
    UnknownPrekeyError,
    UnsupportedVersionError,
    initiate_session,
    prekey_signature_message,
    respond_to_session,
)
from xchat.client.crypto.prekey_store import PREKEY_GRACE_MS


def test_sizes_match_contract() -> None:
    assert (ED25519_PUBLIC_KEY_SIZE, X25519_KEY_SIZE) == (32, 32)
    assert (MLKEM768_PUBLIC_KEY_SIZE, MLKEM768_CIPHERTEXT_SIZE) == (1184, 1088)
    assert [k.value for k in PrekeyKind] == [1, 2, 3]


def test_signature_message_layout_is_the_contract() -> None:
    public = bytes(range(32))
    assert prekey_signature_message(1, 0x01020304, public) == (
        b"xchat-prekey-v1" + b"\x01" + b"\x01\x02\x03\x04" + public
    )
    with pytest.raises(KeyLengthError):
        prekey_signature_message(2, 1, public)  # a PQ key must be 1184 bytes
    with pytest.raises(MalformedMessageError):
        prekey_signature_message(4, 1, public)
    with pytest.raises(MalformedMessageError):
        prekey_signature_message(1, 2**32, public)


def test_server_can_verify_every_upload_with_plain_pynacl(party) -> None:
    """Re-verify as the keys service does: PyNaCl and the documented layout only."""
    p = party()
    upload = p.store.public_prekeys()
    verify = nacl.signing.VerifyKey(upload.identity_key).verify

    def message(kind: int, key_id: int, public: bytes) -> bytes:
        return b"xchat-prekey-v1" + bytes([kind]) + key_id.to_bytes(4, "big") + public

    spk = upload.signed_prekey
    assert spk is not None
    verify(message(1, spk.key_id, spk.public), spk.signature)
    for pq in upload.pq_prekeys:
        verify(message(2, pq.key_id, pq.public), pq.signature)
    lr = upload.last_resort_pq_prekey
    assert lr is not None and lr.last_resort
    verify(message(3, lr.key_id, lr.public), lr.signature)
    assert len(upload.one_time_prekeys) == 2
    assert all(len(k.public) == 32 for k in upload.one_time_prekeys)
    assert len(upload.identity_key) == 32 and len(lr.public) == 1184


def test_identity_round_trip_and_corruption() -> None:
    identity = IdentityKeyPair.generate()
    restored = IdentityKeyPair.from_bytes(identity.to_bytes())
    assert restored.public == identity.public
    nacl.signing.VerifyKey(identity.public).verify(b"x", restored.sign(b"x"))
    blob = bytearray(identity.to_bytes())
    blob[-1] ^= 1
    with pytest.raises(InvalidKeyError):
        IdentityKeyPair.from_bytes(bytes(blob))
    with pytest.raises(UnsupportedVersionError):
        IdentityKeyPair.from_bytes(b"\x09" + identity.to_bytes()[1:])
    with pytest.raises(KeyLengthError):
        IdentityKeyPair.from_bytes(identity.to_bytes()[:20])


@pytest.mark.parametrize(
    ("field", "kind_name"),
    [("signed_prekey", "signed_prekey"), ("pq_prekey", "pq_prekey"), ("lr", "last_resort_pq_prekey")],
)
def test_bad_signature_names_the_key(party, field: str, kind_name: str) -> None:
    bundle = party().bundle(use_pq_one_time=field != "lr")
    attr = "pq_prekey" if field == "lr" else field
    key = getattr(bundle, attr)
    bad_sig = bytes([key.signature[0] ^ 1]) + key.signature[1:]
    forged = dataclasses.replace(bundle, **{attr: dataclasses.replace(key, signature=bad_sig)})
    with pytest.raises(BundleSignatureError) as info:
        forged.verify()
    assert (info.value.key, info.value.key_id) == (kind_name, key.key_id)
    with pytest.raises(BundleSignatureError):
        initiate_session(IdentityKeyPair.generate(), PrekeyBundle.from_bytes(forged.to_bytes()))


def test_signature_by_another_identity_and_kind_confusion_fail(party) -> None:
    a, b = party(), party()
    mixed = dataclasses.replace(a.bundle(), identity_key=b.identity.public)
    with pytest.raises(BundleSignatureError) as info:
        mixed.verify()
    assert info.value.key == "signed_prekey"
    # A one-time PQ key relabelled as last-resort: the kind byte differs, so it fails.
    bundle = a.bundle()
    relabelled = dataclasses.replace(bundle, pq_prekey=dataclasses.replace(bundle.pq_prekey, last_resort=True))
    with pytest.raises(BundleSignatureError) as info:
        relabelled.verify()
    assert info.value.key == "last_resort_pq_prekey"


def test_every_truncation_of_a_bundle_is_a_typed_error(party) -> None:
    bundle = party().bundle()
    blob = bundle.to_bytes()
    assert PrekeyBundle.from_bytes(blob) == bundle
    for n in range(len(blob)):
        with pytest.raises(MalformedMessageError):
            PrekeyBundle.from_bytes(blob[:n])
    with pytest.raises(MalformedMessageError):
        PrekeyBundle.from_bytes(blob + b"\x00")
    with pytest.raises(UnsupportedVersionError) as info:
        PrekeyBundle.from_bytes(b"\x02" + blob[1:])
    assert (info.value.what, info.value.version) == ("bundle", 2)


def test_wrong_key_lengths_in_constructors() -> None:
    with pytest.raises(KeyLengthError) as info:
        SignedPrekey(key_id=1, public=b"\x00" * 31, signature=b"\x00" * 64)
    assert (info.value.expected, info.value.actual) == (32, 31)
    with pytest.raises(KeyLengthError):
        OneTimePrekey(key_id=1, public=b"\x00" * 33)
    with pytest.raises(KeyLengthError):
        PqPrekey(key_id=1, public=b"\x00" * 1183, signature=b"\x00" * 64, last_resort=False)
    with pytest.raises(KeyLengthError):
        PqPrekey(key_id=1, public=b"\x00" * 1184, signature=b"\x00" * 63, last_resort=False)
    with pytest.raises(MalformedMessageError):
        OneTimePrekey(key_id=-1, public=b"\x00" * 32)
    spk = SignedPrekey(key_id=1, public=b"\x00" * 32, signature=b"\x00" * 64)
    pq = PqPrekey(key_id=1, public=b"\x00" * 1184, signature=b"\x00" * 64, last_resort=False)
    with pytest.raises(KeyLengthError):
        PrekeyBundle(identity_key=b"\x00" * 31, signed_prekey=spk, pq_prekey=pq)
    with pytest.raises(UnsupportedVersionError):
        PrekeyBundle(identity_key=b"\x00" * 32, signed_prekey=spk, pq_prekey=pq, version=7)


def test_signed_prekey_rotation_keeps_previous_for_grace_period(party, make_payload) -> None:
    alice, bob = party(), party()
    stale_bundle = bob.bundle()  # fetched before rotation
    bob.store.generate_signed_prekey(now_ms=1_000)
    bob.store.generate_last_resort_pq(now_ms=1_000)
    assert bob.store.public_prekeys().signed_prekey != stale_bundle.signed_prekey
    a, _ = initiate_session(alice.identity, stale_bundle)
    wire = a.encrypt(make_payload())
    store_copy = PrekeyStore.from_bytes(bob.store.to_bytes(), bob.identity)
    respond_to_session(bob.identity, store_copy, wire)  # within grace: fine
    # After the grace period the retired keys are deleted.
    assert bob.store.prune_retired(now_ms=10**15) == 2
    with pytest.raises(UnknownPrekeyError) as info:
        respond_to_session(bob.identity, bob.store, wire)
    assert info.value.kind == "signed_prekey"


def test_a_late_publication_starts_the_replaced_keys_grace_then(party) -> None:
    bob = party()
    first_spk = bob.store.public_prekeys().signed_prekey.key_id
    first_lr = bob.store.public_prekeys().last_resort_pq_prekey.key_id
    bob.store.generate_signed_prekey(now_ms=1_000)  # generated, then uploaded much later
    bob.store.generate_last_resort_pq(now_ms=1_000)
    bob.store.mark_published(now_ms=1_000 + PREKEY_GRACE_MS)
    assert bob.store.prune_retired(now_ms=1_000 + PREKEY_GRACE_MS + 1) == 0, "served until published"
    bob.store.signed_prekey_private(first_spk)
    bob.store.pq_prekey_private(first_lr, last_resort=True)
    assert bob.store.prune_retired(now_ms=1_000 + 2 * PREKEY_GRACE_MS) == 2
    with pytest.raises(UnknownPrekeyError):
        bob.store.signed_prekey_private(first_spk)


def test_one_time_keys_consumed_only_after_success(party, make_payload) -> None:
    alice, bob = party(), party()
    bundle = bob.bundle()
    assert bundle.one_time_prekey is not None and not bundle.pq_prekey.last_resort
    a, _ = initiate_session(alice.identity, bundle)
    wire = a.encrypt(make_payload())
    broken = wire[:-1] + bytes([wire[-1] ^ 1])
    with pytest.raises(CryptoError):
        respond_to_session(bob.identity, bob.store, broken)
    upload = bob.store.public_prekeys()
    assert bundle.one_time_prekey in upload.one_time_prekeys
    respond_to_session(bob.identity, bob.store, wire)
    upload = bob.store.public_prekeys()
    assert bundle.one_time_prekey not in upload.one_time_prekeys
    assert bundle.pq_prekey.key_id not in {k.key_id for k in upload.pq_prekeys}
    assert upload.last_resort_pq_prekey is not None  # last resort is never consumed


def test_last_resort_keys_serve_many_sessions(party, make_payload) -> None:
    bob = party(one_time=0, pq=0)
    bundle = bob.bundle()
    assert bundle.one_time_prekey is None and bundle.pq_prekey.last_resort
    for _ in range(3):
        a, _ = initiate_session(IdentityKeyPair.generate(), bundle)
        respond_to_session(bob.identity, bob.store, a.encrypt(make_payload()))


def test_unknown_prekeys_are_reported_by_kind(party, make_payload) -> None:
    alice, bob = party(), party()
    a, _ = initiate_session(alice.identity, bob.bundle())
    wire = a.encrypt(make_payload())
    with pytest.raises(UnknownPrekeyError) as info:
        respond_to_session(bob.identity, PrekeyStore(bob.identity), wire)
    assert info.value.kind == "signed_prekey"
    lost_one_time = PrekeyStore.from_bytes(bob.store.to_bytes(), bob.identity)
    lost_one_time._one_time.clear()  # e.g. a store restored from an older backup
    with pytest.raises(UnknownPrekeyError) as info:
        respond_to_session(bob.identity, lost_one_time, wire)
    assert info.value.kind == "one_time_prekey"
    with pytest.raises(IdentityMismatchError):
        respond_to_session(bob.identity, party().store, wire)


def test_store_round_trip_and_identity_binding(party) -> None:
    p = party()
    restored = PrekeyStore.from_bytes(p.store.to_bytes(), p.identity)
    assert restored.public_prekeys() == p.store.public_prekeys()
    assert restored.to_bytes() == p.store.to_bytes()
    with pytest.raises(IdentityMismatchError):
        PrekeyStore.from_bytes(p.store.to_bytes(), IdentityKeyPair.generate())
    blob = p.store.to_bytes()
    for n in range(0, len(blob), 97):
        with pytest.raises(MalformedMessageError):
            PrekeyStore.from_bytes(blob[:n], p.identity)


def test_layout_equals_the_keys_service_statement() -> None:
    """Cross-check with the server's own builder (tests may import both sides)."""
    statements = pytest.importorskip("xchat.statements")
    for kind, size in ((1, 32), (2, 1184), (3, 1184)):
        public = bytes([kind]) * size
        assert prekey_signature_message(kind, 77, public) == statements.prekey_statement(kind, 77, public)
