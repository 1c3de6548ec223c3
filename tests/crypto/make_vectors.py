"""Write tests/crypto/vectors/{pqxdh,ratchet,sealed}.json (not collected by pytest, never run by tests).

    .venv/bin/python tests/crypto/make_vectors.py

Run it only for a deliberate change of the wire format or a KDF (a new
protocol version): the committed files are what proves the SDK still
produces the same bytes. Inputs are fresh random bytes; the SDK is then run
through test_crypto_vectors.py's scenarios with them fixed, and the outputs
are written beside the inputs. Each file is checked by a second run before
it is written.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from test_crypto_vectors import (  # noqa: E402
    VECTORS,
    Parties,
    _public,
    pqxdh_outputs,
    ratchet_outputs,
    sealed_outputs,
)

from xchat.client.crypto import primitives  # noqa: E402

SENT_AT_MS = 1_767_225_600_000


def _payload(counter: int, body: str) -> dict[str, Any]:
    return {
        "message_id": counter.to_bytes(16, "big").hex(),
        "counter": counter,
        "sent_at_ms": SENT_AT_MS + counter,
        "content_type": "text/plain",
        "body": body,
    }


def _hex(n: int) -> str:
    return os.urandom(n).hex()


def pqxdh() -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "alice_identity_seed": _hex(32),
        "bob_identity_seed": _hex(32),
        # Drawn in order by generate_signed_prekey, generate_one_time_prekeys(1), generate_pq_prekeys(1).
        "bob_prekey_randomness": [_hex(32), _hex(32), _hex(64)],
        "first_payload": _payload(1, "first message, PQXDH vector"),
        # Bound into the AD (issue 9): the first message is wire version 2.
        "ids": {"alice_account": "alice", "alice_device": _hex(16), "bob_account": "bob", "bob_device": _hex(16)},
    }
    inputs["kem_shared_secret"], inputs["kem_ciphertext"] = "00" * 32, "00" * 1088
    parties = Parties(inputs)
    secret, ciphertext = primitives.mlkem_encapsulate(parties.bundle.pq_prekey.public)  # a real Encaps
    inputs["kem_shared_secret"], inputs["kem_ciphertext"] = secret.hex(), ciphertext.hex()
    ephemeral = _hex(32)
    randomness = {
        "initiate": [ephemeral],  # EK_A
        "initiate_session": [ephemeral, _hex(32)],  # EK_A, then Alice's first ratchet key
        "respond": [_hex(32)],  # Bob's first ratchet key (his DH step on the first message)
    }
    expected = _public(pqxdh_outputs(inputs, randomness))
    return {
        "description": "PQXDH (X25519 + ML-KEM-768) from fixed identity seeds, prekeys, ephemeral key and "
        "encapsulation output, with account and device ids bound into the AD: exact bundle, SK, AD (and the AD "
        "of an unbound session), initial message and first wire message",
        "inputs": inputs,
        "randomness": randomness,
        "expected": expected,
    }


def ratchet(pqxdh_vector: dict[str, Any]) -> dict[str, Any]:
    send = lambda by, mid, counter, body: {"op": "send", "by": by, "id": mid, "payload": _payload(counter, body)}  # noqa: E731
    recv = lambda by, mid: {"op": "receive", "by": by, "id": mid}  # noqa: E731
    steps = [
        send("alice", "a1", 2, "alice again, still a PREKEY frame"),
        recv("bob", "a1"),
        send("bob", "b1", 1, "bob's first reply"),
        send("bob", "b2", 2, "bob's second reply"),
        recv("alice", "b2"),  # out of order: b1's key is skipped and kept
        recv("alice", "b1"),
        send("alice", "a2", 3, "alice after her DH step"),
        send("alice", "a3", 4, "alice once more"),
        recv("bob", "a3"),
        recv("bob", "a2"),
        send("bob", "b3", 3, "bob after his second DH step"),
        recv("alice", "b3"),
    ]
    script: dict[str, Any] = {"steps": steps, "randomness": [None] * len(steps)}
    recorded = ratchet_outputs(pqxdh_vector, script)
    script["randomness"] = recorded["_drawn"]
    expected = _public(ratchet_outputs(pqxdh_vector, script))
    assert expected == _public(recorded)
    return {
        "description": "Double Ratchet after the PQXDH vector's session: a fixed script of sends and receives "
        "(out of order included) with fixed ratchet keys; exact wire bytes (frame, header, ciphertext) of each send",
        **script,
        "expected": expected,
    }


def sealed(pqxdh_vector: dict[str, Any]) -> dict[str, Any]:
    inputs = {
        "sender_account": "alice",
        "sender_device": "a1" * 16,
        "profile_key": _hex(32),
        "account_key_seed": _hex(32),
        "certificate_list_version": 2,
        "certificate_now_ms": SENT_AT_MS,
    }
    randomness = [_hex(32)]  # the sealing ephemeral key
    expected = _public(sealed_outputs(pqxdh_vector, inputs, randomness))
    return {
        "description": "Sealed sender (version 3) of the PQXDH vector's first message to Bob's identity key, "
        "with a fixed ephemeral key, profile key and sender certificate (account key seed, list version, issue "
        "time): exact certificate and sealed bytes",
        "inputs": inputs,
        "randomness": randomness,
        "expected": expected,
    }


def main() -> None:
    VECTORS.mkdir(exist_ok=True)
    pqxdh_vector = pqxdh()
    assert _public(pqxdh_outputs(pqxdh_vector["inputs"], pqxdh_vector["randomness"])) == pqxdh_vector["expected"]
    files = {"pqxdh.json": pqxdh_vector, "ratchet.json": ratchet(pqxdh_vector), "sealed.json": sealed(pqxdh_vector)}
    for name, vector in files.items():
        (VECTORS / name).write_text(json.dumps(vector, indent=1) + "\n")
        print(f"wrote {VECTORS / name}")


if __name__ == "__main__":
    main()
