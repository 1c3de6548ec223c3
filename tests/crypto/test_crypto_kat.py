"""Known-answer tests: our KDFs and ratchet steps equal the specs' formulas.

Expected values are recomputed here from the published constructions with
``hmac``/``hashlib`` (HKDF per RFC 5869 written out) and raw primitives, not
through the package's own helpers.
"""

from __future__ import annotations

import hashlib
import hmac

import nacl.bindings
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xchat.client.crypto import Payload, initiate_session, respond_to_session
from xchat.client.crypto.pqxdh import InitialMessage, initiate, respond
from xchat.client.crypto.ratchet import kdf_ck, kdf_rk
from xchat.client.crypto.wire import parse_wire

RK_INFO = b"xchat_DR_root_ratchet"
PQXDH_INFO = b"xchat_CURVE25519_SHA-256_ML-KEM-768"
AEAD_INFO = b"xchat_DR_AES-256-GCM_message_key"


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for i in range((length + 31) // 32):
        block = hmac.new(prk, block + info + bytes([i + 1]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


def dh(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public)
    )


def open_with(mk: bytes, wire: bytes, ad: bytes) -> bytes:
    okm = hkdf(mk, bytes(32), AEAD_INFO, 44)
    message = parse_wire(wire)
    return AESGCM(okm[:32]).decrypt(okm[32:], message.ciphertext, ad + message.authenticated)


def test_kdf_ck_matches_spec() -> None:
    ck = bytes(range(32))
    next_ck, mk = kdf_ck(ck)
    assert mk == hmac.new(ck, b"\x01", hashlib.sha256).digest()
    assert next_ck == hmac.new(ck, b"\x02", hashlib.sha256).digest()


def test_kdf_rk_is_hkdf_with_root_key_as_salt() -> None:
    rk, dh_out = b"\x11" * 32, b"\x22" * 32
    okm = hkdf(dh_out, rk, RK_INFO, 64)
    assert kdf_rk(rk, dh_out) == (okm[:32], okm[32:])


def test_hkdf_helper_matches_rfc5869_case_1() -> None:
    # RFC 5869 A.1 keeps the independent HKDF above honest.
    okm = hkdf(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def _identity_x25519_private(identity_bytes: bytes) -> bytes:
    seed, public = identity_bytes[1:33], identity_bytes[33:65]
    return bytes(nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(seed + public))


def _expected_sk(bob, message: InitialMessage) -> bytes:
    """SK = HKDF(F || DH1 || DH2 || DH3 [|| DH4] || SS), salt 0^32, info per spec."""
    store = bob.store
    spk = store.signed_prekey_private(message.signed_prekey_id).private_bytes_raw()
    ik_b = _identity_x25519_private(bob.identity.to_bytes())
    ik_a_pub = bytes(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(message.identity_key))
    parts = [dh(spk, ik_a_pub), dh(ik_b, message.ephemeral_key), dh(spk, message.ephemeral_key)]
    if message.one_time_prekey_id is not None:
        opk = store.one_time_prekey_private(message.one_time_prekey_id).private_bytes_raw()
        parts.append(dh(opk, message.ephemeral_key))
    pq = store.pq_prekey_private(message.pq_prekey_id, last_resort=message.pq_last_resort)
    ss = pq.decapsulate(message.kem_ciphertext)
    return hkdf(b"\xff" * 32 + b"".join(parts) + ss, bytes(32), PQXDH_INFO, 32)


def test_pqxdh_shared_key_with_one_time_prekey(party) -> None:
    alice, bob = party(), party()
    agreement_a, message = initiate(alice.identity, bob.bundle())
    assert message.one_time_prekey_id is not None and not message.pq_last_resort
    expected = _expected_sk(bob, message)
    agreement_b = respond(bob.identity, bob.store, message)
    assert agreement_a.shared_key == agreement_b.shared_key == expected
    ad = b"\x01" + alice.identity.public + b"\x01" + bob.identity.public
    assert agreement_a.associated_data == agreement_b.associated_data == ad


def test_pqxdh_shared_key_without_one_time_keys_uses_last_resort(party) -> None:
    alice, bob = party(), party()
    bundle = bob.bundle(use_one_time=False, use_pq_one_time=False)
    agreement_a, message = initiate(alice.identity, bundle)
    assert message.one_time_prekey_id is None and message.pq_last_resort
    assert agreement_a.shared_key == _expected_sk(bob, message)


def test_ratchet_chain_and_dh_steps_match_spec(party) -> None:
    alice, bob = party(), party()
    bundle = bob.bundle()
    a, initial = initiate_session(alice.identity, bundle)
    sk = _expected_sk(bob, initial)
    ad = b"\x01" + alice.identity.public + b"\x01" + bob.identity.public

    # RatchetInitAlice: RK, CKs = KDF_RK(SK, DH(DHs_A, SPK_B)).
    dhs_a = a._state.dhs.private_bytes_raw()
    okm_a = hkdf(dh(dhs_a, bundle.signed_prekey.public), sk, RK_INFO, 64)
    rk1, ck_a = okm_a[:32], okm_a[32:]
    first = Payload.new(b"m0", counter=0)
    second = Payload.new(b"m1", counter=1)
    w0, w1 = a.encrypt(first), a.encrypt(second)
    # Message keys: mk_i = HMAC(ck_i, 0x01), ck_{i+1} = HMAC(ck_i, 0x02).
    mk0 = hmac.new(ck_a, b"\x01", hashlib.sha256).digest()
    ck_a1 = hmac.new(ck_a, b"\x02", hashlib.sha256).digest()
    mk1 = hmac.new(ck_a1, b"\x01", hashlib.sha256).digest()
    assert open_with(mk0, w0, ad) == first.encode()
    assert open_with(mk1, w1, ad) == second.encode()
    # Header in clear: DHs_A public, pn = 0, n = 0 / 1.
    h0, h1 = parse_wire(w0).header, parse_wire(w1).header
    assert (h0.pn, h0.n, h1.n) == (0, 0, 1) and h0.dh == a._state.dhs_public

    b, got = respond_to_session(bob.identity, bob.store, w0)
    assert got == first
    # RatchetInitBob + DHRatchet: RK = SK; (RK, CKr) = KDF_RK(SK, DH(SPK_B, DHs_A));
    # new DHs_B; (RK, CKs) = KDF_RK(RK, DH(DHs_B', DHs_A)).
    spk_priv = bob.store.signed_prekey_private(bundle.signed_prekey.key_id).private_bytes_raw()
    okm = hkdf(dh(spk_priv, h0.dh), sk, RK_INFO, 64)
    assert okm[32:] == ck_a  # Bob's receiving chain is Alice's sending chain
    rk_b1 = okm[:32]
    assert rk_b1 == rk1
    dhs_b = b._state.dhs.private_bytes_raw()
    okm2 = hkdf(dh(dhs_b, h0.dh), rk_b1, RK_INFO, 64)
    assert b._state.rk == okm2[:32]
    reply = Payload.new(b"r0", counter=0)
    wr = b.encrypt(reply)
    header = parse_wire(wr).header
    assert (header.dh, header.pn, header.n) == (b._state.dhs_public, 0, 0)
    assert open_with(hmac.new(okm2[32:], b"\x01", hashlib.sha256).digest(), wr, ad) == reply.encode()
    assert a.decrypt(wr) == reply
