"""Cost of one group message to 100 member devices, pairwise vs Sender Keys (not collected by pytest).

    .venv/bin/python tests/crypto/bench_sender_keys.py [--devices 100] [--body 200] [--rounds 30]

Prints JSON, client CPU (process_time) per group message and bytes per device:

* ``pairwise``: what ``send_many`` does today per recipient device — a Double
  Ratchet encryption of the padded payload, the sealed-sender wrap, and the
  session serialised for SQLite — times the devices;
* ``sender_key_over_pairwise``: what ``send_group`` does (docs/adr/0015): one
  sender-key encryption + signature, then the pairwise path per device with
  the sender-key ciphertext as the body;
* ``sender_key_once``: the sender-key encryption alone — the client's whole
  cost if a relay fan-out RPC took one ciphertext and a recipient list (and
  the per-device sealed wrap the server would need instead, measured apart).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from xchat.client.crypto import IdentityKeyPair, Payload, PrekeyBundle, PrekeyStore, Session, initiate_session, respond_to_session
from xchat.client.crypto.sealed import seal
from xchat.client.crypto.sender_keys import SenderKey

DEVICE = "ab" * 16


def _session() -> tuple[Session, bytes]:
    alice, bob = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    store = PrekeyStore(bob)
    store.generate_signed_prekey()
    store.generate_one_time_prekeys(1)
    store.generate_pq_prekeys(1)
    store.generate_last_resort_pq()
    a, _ = initiate_session(alice, PrekeyBundle.from_store(store))
    b, _ = respond_to_session(bob, store, a.encrypt(Payload.new(b"hi", counter=0)))
    a.decrypt(b.encrypt(Payload.new(b"ok", counter=0)))  # past the prekey message: the steady state
    return a, bob.public


def _pairwise(sessions: list[tuple[Session, bytes]], body: bytes) -> int:
    size = 0
    for counter, (session, identity) in enumerate(sessions):
        inner = session.encrypt(Payload.new(body, counter=counter, content_type="text/plain"))
        sealed = seal(sender_account="alice", sender_device=DEVICE, inner=inner, recipient_identity=identity)
        session.to_bytes()
        size += len(sealed)
    return size // len(sessions)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--body", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    sessions = [_session() for _ in range(args.devices)]
    key = SenderKey.generate(os.urandom(16))
    body = b"x" * args.body
    results: dict[str, list[float]] = {"pairwise": [], "sender_key_over_pairwise": [], "sender_key_once": [], "seal_per_device": []}
    sizes: dict[str, int] = {}
    for _ in range(args.rounds):
        t0 = time.process_time()
        sizes["pairwise"] = _pairwise(sessions, body)
        results["pairwise"].append(time.process_time() - t0)

        t0 = time.process_time()
        wire = key.encrypt(sender_account="alice", sender_device=DEVICE, plaintext=body)
        key.to_bytes()
        results["sender_key_once"].append(time.process_time() - t0)
        sizes["sender_key_once"] = len(wire)
        t0 = time.process_time()
        wire = key.encrypt(sender_account="alice", sender_device=DEVICE, plaintext=body)
        key.to_bytes()
        sizes["sender_key_over_pairwise"] = _pairwise(sessions, wire)
        results["sender_key_over_pairwise"].append(time.process_time() - t0)

        t0 = time.process_time()
        for _session_, identity in sessions:
            seal(sender_account="alice", sender_device=DEVICE, inner=wire, recipient_identity=identity)
        results["seal_per_device"].append((time.process_time() - t0) / args.devices)
    report = {
        "devices": args.devices,
        "body_bytes": args.body,
        "median_ms_client_cpu_per_group_message": {
            k: round(sorted(v)[len(v) // 2] * 1000, 3) for k, v in results.items() if k != "seal_per_device"
        },
        "median_us_sealed_wrap_per_device": round(sorted(results["seal_per_device"])[args.rounds // 2] * 1e6, 1),
        "bytes_per_device_envelope": sizes,
        "bytes_client_to_relay_per_group_message": {
            "pairwise": sizes["pairwise"] * args.devices,
            "sender_key_over_pairwise": sizes["sender_key_over_pairwise"] * args.devices,
            "relay_fanout_rpc_estimate": sizes["sender_key_once"] + 16 * args.devices,
        },
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
