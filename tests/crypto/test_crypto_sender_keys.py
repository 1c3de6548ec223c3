"""Sender Keys (crypto/sender_keys.py): known-answer vectors and the attacks a member would try.

``vectors/sender_keys.json`` holds fixed inputs (group id, key id, chain key,
signing seed, plaintexts) and the exact bytes the SDK produced from them when
``make_sender_key_vectors.py`` wrote it: any change to the chain KDF, the AEAD
derivation, the wire layout or the signed span fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from xchat.client.crypto.errors import MalformedMessageError, ReplayedMessageError, TamperedMessageError, TooManySkippedMessagesError
from xchat.client.crypto.sender_keys import (
    MAX_SENDER_KEY_SKIP,
    ReceivedSenderKey,
    SenderKey,
    SenderKeySignatureError,
    parse_header,
)

VECTOR_FILE = Path(__file__).parent / "vectors" / "sender_keys.json"


def _sender(inputs: dict[str, Any]) -> SenderKey:
    return SenderKey(
        group_id=bytes.fromhex(inputs["group_id"]),
        key_id=inputs["key_id"],
        chain_key=bytes.fromhex(inputs["chain_key"]),
        signing_seed=bytes.fromhex(inputs["signing_seed"]),
    )


def sender_key_outputs(inputs: dict[str, Any]) -> dict[str, Any]:
    sender = _sender(inputs)
    distribution = sender.distribution()
    wires = [
        sender.encrypt(sender_account=inputs["sender_account"], sender_device=inputs["sender_device"], plaintext=p.encode())
        for p in inputs["plaintexts"]
    ]
    # A receiver reads the last first (skipping), then the skipped one, and ends on the sender's chain.
    receiver = ReceivedSenderKey.from_distribution(distribution)
    read = [receiver.decrypt(wires[0])[1].decode(), receiver.decrypt(wires[2])[1].decode(), receiver.decrypt(wires[1])[1].decode()]
    assert receiver.chain_key == sender.chain_key and receiver.iteration == sender.iteration == len(wires)
    return {
        "signing_public": sender.signing_public.hex(),
        "distribution": distribution.hex(),
        "wires": [w.hex() for w in wires],
        "read_order_0_2_1": read,
        "final_chain_key": sender.chain_key.hex(),
    }


def test_vectors_reproduce_byte_for_byte() -> None:
    vector = json.loads(VECTOR_FILE.read_text())
    assert sender_key_outputs(vector["inputs"]) == vector["outputs"]


def _pair() -> tuple[SenderKey, ReceivedSenderKey]:
    sender = SenderKey.generate(b"g" * 16)
    return sender, ReceivedSenderKey.from_distribution(sender.distribution())


def _send(sender: SenderKey, text: bytes = b"hi") -> bytes:
    return sender.encrypt(sender_account="alice", sender_device="a1", plaintext=text)


def test_a_member_holding_the_chain_cannot_forge_the_senders_messages() -> None:
    alice, bobs_copy = _pair()
    mallorys_copy = ReceivedSenderKey.from_distribution(alice.distribution())
    # Mallory has alice's chain key (every member does) but not her signing key.
    forger = SenderKey(
        group_id=alice.group_id, key_id=alice.key_id, chain_key=mallorys_copy.chain_key, signing_seed=b"m" * 32
    )
    forged = forger.encrypt(sender_account="alice", sender_device="a1", plaintext=b"pay mallory")
    assert parse_header(forged).sender_account == "alice"
    with pytest.raises(SenderKeySignatureError):
        bobs_copy.decrypt(forged)
    # Refused without a trace: alice's genuine message still opens.
    assert bobs_copy.decrypt(_send(alice, b"genuine"))[1] == b"genuine"


def test_replay_tamper_and_skip_bounds() -> None:
    alice, bob = _pair()
    first = _send(alice)
    assert bob.decrypt(first)[1] == b"hi"
    with pytest.raises(ReplayedMessageError):
        bob.decrypt(first)
    flipped = bytearray(_send(alice))
    flipped[-70] ^= 1  # inside the AEAD ciphertext, signed: the signature refuses it first
    with pytest.raises(SenderKeySignatureError):
        bob.decrypt(bytes(flipped))
    for _ in range(MAX_SENDER_KEY_SKIP + 1):
        alice.encrypt(sender_account="alice", sender_device="a1", plaintext=b"")
    with pytest.raises(TooManySkippedMessagesError):
        bob.decrypt(_send(alice))
    with pytest.raises(MalformedMessageError):
        bob.decrypt(b"\x01" + b"\x00" * 10)


def test_state_round_trips_with_skipped_keys() -> None:
    alice, bob = _pair()
    wires = [_send(alice, bytes([i])) for i in range(4)]
    bob.decrypt(wires[3])
    restored = ReceivedSenderKey.from_bytes(bob.to_bytes())
    assert [restored.decrypt(w)[1] for w in wires[:3]] == [b"\x00", b"\x01", b"\x02"]
    again = SenderKey.from_bytes(alice.to_bytes())
    assert again.signing_public == alice.signing_public and again.iteration == 4
    assert restored.decrypt(_send(again, b"after restore"))[1] == b"after restore"


def test_a_wrong_key_fails_closed() -> None:
    _alice, bob = _pair()
    other = SenderKey(group_id=bob.group_id, key_id=bob.key_id, chain_key=b"x" * 32, signing_seed=b"s" * 32)
    bob.signing_public = other.signing_public  # even a matching signature does not open another chain
    with pytest.raises(TamperedMessageError):
        bob.decrypt(_send(other))
