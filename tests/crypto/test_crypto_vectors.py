"""Known-answer vectors as committed files: PQXDH, the Double Ratchet, the sealed layer and its certificate.

``tests/crypto/vectors/*.json`` hold fixed inputs (identity seeds, every byte
of randomness the SDK draws, in order, and ML-KEM's encapsulation output) and
the exact bytes the SDK produced from them when the files were written by
``tests/crypto/make_vectors.py`` (never run by this test). Here the SDK
recomputes everything from the inputs and must give the same bytes: any
change to a KDF, an info string, a wire layout, the padding or the order of
operations fails, even one that stays self-consistent (which every
round-trip test would miss).

Randomness enters through a private seam of ``crypto.primitives``
(``_fixed_random``, ``_fixed_encapsulation``); the public API is unchanged.
ML-KEM's encapsulation output is fixed too (``cryptography`` has no
derandomized Encaps), and checked against the real Decaps with Bob's key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from xchat.client.crypto import IdentityKeyPair, Payload, PrekeyBundle, PrekeyStore, initiate_session, respond_to_session
from xchat.client.crypto import primitives
from xchat.client.crypto.certificates import check_certificate, issue_certificate
from xchat.client.crypto.pqxdh import encode_ids, initiate, respond
from xchat.client.crypto.sealed import seal, unseal
from xchat.client.crypto.sessions import Session

VECTORS = Path(__file__).parent / "vectors"
FIXED_NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: prekey dates (not in any output)
PQXDH_INFO = b"xchat_CURVE25519_SHA-256_ML-KEM-768"

Vector = dict[str, Any]


@contextmanager
def fixed_randomness(draws: list[str] | None, encapsulation: tuple[str, str] | None = None) -> Iterator[list[str]]:
    """Key generation draws from ``draws`` (hex, in order; all must be used).

    ``draws=None`` records fresh random bytes instead (the generator's mode);
    the yielded list holds what was drawn, in order.
    """
    used: list[str] = []
    queue = None if draws is None else list(draws)

    def take(n: int) -> bytes:
        if queue is None:
            value = os.urandom(n)
        else:
            assert queue, "the SDK drew more randomness than the vector holds"
            value = bytes.fromhex(queue.pop(0))
            assert len(value) == n, f"vector randomness of {len(value)} bytes where the SDK drew {n}"
        used.append(value.hex())
        return value

    fixed_kem: Callable[[bytes], tuple[bytes, bytes]] | None = None
    if encapsulation is not None:
        secret, ciphertext = bytes.fromhex(encapsulation[0]), bytes.fromhex(encapsulation[1])
        fixed_kem = lambda _public: (secret, ciphertext)  # noqa: E731
    primitives._fixed_random, primitives._fixed_encapsulation = take, fixed_kem  # noqa: SLF001
    try:
        yield used
    finally:
        primitives._fixed_random, primitives._fixed_encapsulation = None, None  # noqa: SLF001
    assert not queue, f"{len(queue)} vector randomness values left unused: the SDK draws less than it did"


def payload(spec: Vector) -> Payload:
    return Payload(
        message_id=bytes.fromhex(spec["message_id"]),
        counter=spec["counter"],
        sent_at_ms=spec["sent_at_ms"],
        content_type=spec["content_type"],
        body=spec["body"].encode(),
    )


class Parties:
    """Alice and Bob of the PQXDH vector: identities, Bob's prekeys and bundle, from fixed inputs."""

    def __init__(self, inputs: Vector) -> None:
        self.alice = IdentityKeyPair(bytes.fromhex(inputs["alice_identity_seed"]))
        self.bob = IdentityKeyPair(bytes.fromhex(inputs["bob_identity_seed"]))
        self.store = PrekeyStore(self.bob)
        with fixed_randomness(inputs["bob_prekey_randomness"]):
            self.store.generate_signed_prekey(now_ms=FIXED_NOW_MS)
            self.store.generate_one_time_prekeys(1)
            self.store.generate_pq_prekeys(1)
        self.bundle = PrekeyBundle.from_store(self.store)
        self.encapsulation = (inputs["kem_shared_secret"], inputs["kem_ciphertext"])


def bound_ids(inputs: Vector) -> bytes:
    """The account and device ids the vector's session binds into its PQXDH AD (b"": none)."""
    ids = inputs.get("ids")
    if ids is None:
        return b""
    return encode_ids(ids["alice_account"], ids["alice_device"], ids["bob_account"], ids["bob_device"])


# --- scenarios: the generator and the test drive the SDK through the same steps ------


def pqxdh_outputs(inputs: Vector, randomness: Vector) -> Vector:
    parties = Parties(inputs)
    ids = bound_ids(inputs)
    with fixed_randomness(randomness["initiate"], parties.encapsulation) as drawn_initiate:
        agreement, initial = initiate(parties.alice, parties.bundle, ids=ids)
    with fixed_randomness(randomness["initiate"], parties.encapsulation):
        unbound, _ = initiate(parties.alice, parties.bundle)  # sessions started before ids were bound
    with fixed_randomness(randomness["initiate_session"], parties.encapsulation) as drawn_session:
        session, _ = initiate_session(parties.alice, parties.bundle, ids=ids)
        first = session.encrypt(payload(inputs["first_payload"]))
    with fixed_randomness(randomness["respond"]) as drawn_respond:
        bob_session, opened = respond_to_session(parties.bob, parties.store, first, ids=ids)
    assert opened == payload(inputs["first_payload"])
    assert respond(parties.bob, _fresh_store(inputs), initial, ids=ids).shared_key == agreement.shared_key
    assert unbound.shared_key == agreement.shared_key  # the ids enter the AD only
    return {
        "bundle": parties.bundle.to_bytes().hex(),
        "shared_key": agreement.shared_key.hex(),
        "associated_data": agreement.associated_data.hex(),
        "associated_data_unbound": unbound.associated_data.hex(),
        "initial_message": initial.to_bytes().hex(),
        "first_message": first.hex(),
        "_drawn": {"initiate": drawn_initiate, "initiate_session": drawn_session, "respond": drawn_respond},
    }


def _fresh_store(inputs: Vector) -> PrekeyStore:
    return Parties(inputs).store  # the same keys, none consumed yet


def _established(inputs: Vector, randomness: Vector) -> tuple[Session, Session]:
    parties = Parties(inputs)
    ids = bound_ids(inputs)
    with fixed_randomness(randomness["initiate_session"], parties.encapsulation):
        alice, _ = initiate_session(parties.alice, parties.bundle, ids=ids)
        first = alice.encrypt(payload(inputs["first_payload"]))
    with fixed_randomness(randomness["respond"]):
        bob, _ = respond_to_session(parties.bob, parties.store, first, ids=ids)
    return alice, bob


def ratchet_outputs(pqxdh: Vector, script: Vector) -> Vector:
    """The script's messages after the PQXDH vector's first one: exact wire bytes, in sending order."""
    alice, bob = _established(pqxdh["inputs"], pqxdh["randomness"])
    sessions = {"alice": alice, "bob": bob}
    wires: dict[str, bytes] = {}
    drawn: list[list[str]] = []
    for step, draws in zip(script["steps"], script["randomness"], strict=True):
        with fixed_randomness(draws) as used:
            if step["op"] == "send":
                wires[step["id"]] = sessions[step["by"]].encrypt(payload(step["payload"]))
            else:
                message = next(s for s in script["steps"] if s["op"] == "send" and s["id"] == step["id"])
                got = sessions[step["by"]].decrypt(wires[step["id"]])
                assert got == payload(message["payload"]), step
        drawn.append(used)
    return {"wires": {k: v.hex() for k, v in wires.items()}, "_drawn": drawn}


def sealed_outputs(pqxdh: Vector, inputs: Vector, randomness: list[str]) -> Vector:
    parties = Parties(pqxdh["inputs"])
    inner = bytes.fromhex(pqxdh["expected"]["first_message"])
    account_seed = bytes.fromhex(inputs["account_key_seed"])
    certificate = issue_certificate(
        account_seed, account=inputs["sender_account"], device=inputs["sender_device"],
        identity_key=parties.alice.public, list_version=inputs["certificate_list_version"],
        now_ms=inputs["certificate_now_ms"],
    ).to_bytes()
    with fixed_randomness(randomness) as used:
        sealed = seal(
            sender_account=inputs["sender_account"],
            sender_device=inputs["sender_device"],
            inner=inner,
            recipient_identity=parties.bob.public,
            profile_key=bytes.fromhex(inputs["profile_key"]),
            certificate=certificate,
        )
    content = unseal(parties.bob, sealed)
    assert (content.sender_account, content.sender_device, content.inner) == (
        inputs["sender_account"], inputs["sender_device"], inner,
    )
    assert content.profile_key == bytes.fromhex(inputs["profile_key"])
    check_certificate(
        content.certificate, account_key=IdentityKeyPair(account_seed).public, claimed_account=inputs["sender_account"],
        claimed_device=inputs["sender_device"], session_identity_key=parties.alice.public,
        now_ms=inputs["certificate_now_ms"],
    )
    return {"certificate": certificate.hex(), "sealed": sealed.hex(), "_drawn": used}


def load(name: str) -> Vector:
    return json.loads((VECTORS / name).read_text())


def _public(outputs: Vector) -> Vector:
    return {k: v for k, v in outputs.items() if not k.startswith("_")}


# --- tests -------------------------------------------------------------------------


def test_pqxdh_vector() -> None:
    vector = load("pqxdh.json")
    assert _public(pqxdh_outputs(vector["inputs"], vector["randomness"])) == vector["expected"]


def test_pqxdh_vector_shared_key_is_the_spec_formula_over_the_fixed_keys() -> None:
    """SK recomputed from the file's inputs with raw X25519 and HKDF written out (RFC 5869)."""
    vector = load("pqxdh.json")
    inputs, draws = vector["inputs"], vector["randomness"]
    parties = Parties(inputs)
    ek = X25519PrivateKey.from_private_bytes(bytes.fromhex(draws["initiate"][0]))
    spk = X25519PrivateKey.from_private_bytes(bytes.fromhex(inputs["bob_prekey_randomness"][0]))
    opk = X25519PrivateKey.from_private_bytes(bytes.fromhex(inputs["bob_prekey_randomness"][1]))

    def dh(private: X25519PrivateKey, public: bytes) -> bytes:
        return private.exchange(X25519PublicKey.from_public_bytes(public))

    def pub(private: X25519PrivateKey) -> bytes:
        return private.public_key().public_bytes_raw()

    ik_b = parties.bob.x25519_public
    dhs = dh(parties.alice.x25519_private, pub(spk)) + dh(ek, ik_b) + dh(ek, pub(spk)) + dh(ek, pub(opk))
    ikm = b"\xff" * 32 + dhs + bytes.fromhex(inputs["kem_shared_secret"])
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    sk = hmac.new(prk, PQXDH_INFO + b"\x01", hashlib.sha256).digest()
    assert sk.hex() == vector["expected"]["shared_key"]
    # The fixed encapsulation output is a real one for Bob's PQ prekey.
    pq_id = parties.bundle.pq_prekey.key_id
    decapsulated = parties.store.pq_prekey_private(pq_id, last_resort=False).decapsulate(
        bytes.fromhex(inputs["kem_ciphertext"])
    )
    assert decapsulated.hex() == inputs["kem_shared_secret"]


def test_ratchet_vector() -> None:
    pqxdh, vector = load("pqxdh.json"), load("ratchet.json")
    assert _public(ratchet_outputs(pqxdh, vector)) == vector["expected"]


def test_sealed_vector() -> None:
    pqxdh, vector = load("pqxdh.json"), load("sealed.json")
    assert _public(sealed_outputs(pqxdh, vector["inputs"], vector["randomness"])) == vector["expected"]


def test_the_seam_is_closed_after_use() -> None:
    load_and_run = load("sealed.json")
    sealed_outputs(load("pqxdh.json"), load_and_run["inputs"], load_and_run["randomness"])
    assert primitives._fixed_random is None and primitives._fixed_encapsulation is None  # noqa: SLF001
    assert primitives.x25519_public_bytes(primitives.x25519_generate()) != primitives.x25519_public_bytes(
        primitives.x25519_generate()
    )


def test_pqxdh_vector_ad_is_the_documented_layout() -> None:
    """AD = 0x01 || IK_A || 0x01 || IK_B || u8 len || account_A || device_A || u8 len || account_B || device_B,
    written out here by hand; a session binding ids sends wire version 2, an unbound one's AD stops after IK_B."""
    vector = load("pqxdh.json")
    inputs, expected = vector["inputs"], vector["expected"]
    parties, ids = Parties(inputs), inputs["ids"]
    keys = b"\x01" + parties.alice.public + b"\x01" + parties.bob.public
    written = keys
    for account, device in ((ids["alice_account"], ids["alice_device"]), (ids["bob_account"], ids["bob_device"])):
        written += bytes([len(account)]) + account.encode() + bytes.fromhex(device)
    assert expected["associated_data"] == written.hex()
    assert expected["associated_data_unbound"] == keys.hex()
    assert bytes.fromhex(expected["first_message"])[0] == 2
