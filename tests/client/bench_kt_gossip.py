"""What key transparency gossip and required auditors cost (docs/adr/0014, addendum): bytes and CPU.

    .venv/bin/python tests/client/bench_kt_gossip.py [--epochs 525600] [--samples 20000] [--mesh 100]

- **Bytes per message**: every payload carries the sender's (epoch, log root)
  as a payload extension. Measured over body lengths 0..2047 (uniform): what
  the extension adds to the encoded payload (and so to the ciphertext, which
  is the payload plus a fixed overhead), after padding to 160-byte blocks.
- **CPU per message**: the sender's part (the extension and its encoding) and
  the receiver's (decoding it and comparing it with its own view: the same
  epoch needs no network), each as the difference to a payload without it.
- **CPU per check of another epoch**: verifying the directory's consistency
  proof between two epochs of a log of ``--epochs`` epochs (a year at one per
  minute); the proof call itself is one unary RPC like ``LookupKey``, made once
  per distinct (epoch, root) and view of ours, not per message.
- **CPU per lookup with a required auditor**: parsing and verifying one
  statement (Ed25519) and its consistency proof to the head.
- ``--mesh N``: on a real local three-region mesh, N checks of an older epoch
  end to end from another region (``Auth.ProveConsistency`` and the
  verification): wall time and the SDK's CPU (process time) per check.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import nacl.signing

from xchat.client._auditors import RequiredAuditors, ServedStatement
from xchat.client import Client
from xchat.client._gossip import Gossip
from xchat.client.crypto import Payload
from xchat.client.crypto.auditing import sign_statement
from xchat.client.crypto.merkle import consistency_proof, log_root, verify_consistency
from xchat.client.crypto.transparency import EpochHead
from xchat.mesh.local import LocalMesh


def _us(fn: object, samples: int) -> float:
    """Median of ``samples`` timings of ``fn()`` in µs (batches of 100 to stay above the clock's grain)."""
    runs = []
    for _ in range(max(1, samples // 100)):
        t0 = time.perf_counter()
        for _ in range(100):
            fn()  # type: ignore[operator]
        runs.append((time.perf_counter() - t0) * 1e6 / 100)
    return round(statistics.median(runs), 2)


async def on_mesh(mesh: LocalMesh, work: Path, checks: int) -> dict[str, object]:
    """Checks of an older epoch than ours, end to end, from region b (the log written from region a)."""
    stamp = int(time.time())
    async with await Client.open(work / "reader.db", mesh.endpoints("b")) as reader:
        for i in range(4):  # a few epochs
            async with await Client.open(work / f"{i}.db", mesh.endpoints("a")) as c:
                await c.register(f"g{i}x{stamp}")
                await c.monitor_account()
        await reader.register(f"reader{stamp}")
        await reader.monitor_account()
        ours = reader._transparency.last_epoch
        assert ours is not None and ours.epoch >= 2
        older = reader._gossip
        wall, cpu = [], []
        for n in range(checks):
            first = n % ours.epoch
            t0, c0 = time.perf_counter(), time.process_time()
            proof = await older._prove(first, ours.epoch)
            assert proof is not None
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1e6)
    return {
        "checks": checks,
        "epoch": ours.epoch,
        "check_ms": {"median": round(statistics.median(wall), 2), "p90": round(sorted(wall)[int(len(wall) * 0.9)], 2)},
        "sdk_cpu_us_per_check": {"median": round(statistics.median(cpu)), "p90": round(sorted(cpu)[int(len(cpu) * 0.9)])},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=525_600)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--mesh", type=int, default=0, help="checks of another epoch on a real local mesh (0: none)")
    args = parser.parse_args()
    mesh_figures: dict[str, object] | None = None
    if args.mesh:
        with tempfile.TemporaryDirectory(prefix="kt-gossip-") as tmp, LocalMesh(Path(tmp) / "mesh") as mesh:
            mesh_figures = asyncio.run(on_mesh(mesh, Path(tmp), args.mesh))
    rng = random.Random(15)

    leaves = [hashlib.sha256(b"\x00epoch %d" % i).digest() for i in range(args.epochs)]
    cache: dict[tuple[int, int], bytes] = {}
    root = log_root(leaves, cache)
    key = nacl.signing.SigningKey.generate()
    head = EpochHead(args.epochs - 1, os.urandom(32), 0, 0).signed(root, key)
    view = SimpleNamespace(last_epoch=head)
    events: list[object] = []
    gossip = Gossip(view, None, on_event=events.append, own_account=lambda: "me")  # type: ignore[arg-type]
    extensions = gossip.outgoing()

    # Bytes: the encoded payload (the ciphertext is it plus a fixed overhead) with and without the extension.
    added, grew = [], 0
    for n in range(2048):
        plain = Payload.new(b"x" * n, counter=1)
        with_gossip = Payload(
            message_id=plain.message_id, counter=1, sent_at_ms=plain.sent_at_ms, content_type=plain.content_type,
            body=plain.body, extensions=extensions,
        )
        delta = len(with_gossip.encode()) - len(plain.encode())
        added.append(delta)
        grew += delta > 0
    fields_added = 1 + 2 + len(extensions[0][1])

    # CPU per message.
    body = b"x" * 100
    plain = Payload.new(body, counter=1)
    sent = Payload.new(body, counter=1, extensions=gossip.outgoing())
    plain_bytes, sent_bytes = plain.encode(), sent.encode()
    encode_plain = _us(lambda: Payload.new(body, counter=1).encode(), args.samples)
    encode_gossip = _us(lambda: Payload.new(body, counter=1, extensions=gossip.outgoing()).encode(), args.samples)
    decode_plain = _us(lambda: Payload.decode(plain_bytes), args.samples)
    decode_check = _us(lambda: gossip.received("bob", "d", Payload.decode(sent_bytes)), args.samples)
    assert not events

    # CPU per check of another epoch: the directory's proof from a random earlier epoch.
    verify_us = []
    for _ in range(200):
        old = rng.randrange(1, args.epochs)
        proof = consistency_proof(old, leaves, cache)
        old_root = log_root(leaves[:old], cache)
        t0 = time.perf_counter()
        verify_consistency(old, args.epochs, old_root, root, proof)
        verify_us.append((time.perf_counter() - t0) * 1e6)

    # CPU per lookup with a required auditor: one statement an hour behind the head.
    auditor = nacl.signing.SigningKey.generate()
    audited = args.epochs - 61
    statement = json.dumps(sign_statement(
        regions=["a", "b", "c"], from_epoch=0, epoch=audited, log_root=log_root(leaves[: audited + 1], cache),
        map_root=os.urandom(32), entries=10**6, auditor=auditor,
    )).encode()
    served = [ServedStatement(statement, tuple(consistency_proof(audited + 1, leaves, cache)))]
    rules = RequiredAuditors([bytes(auditor.verify_key)])
    auditor_us = _us(lambda: rules.check(head, served), min(args.samples, 2000))

    print(json.dumps({
        "epochs": args.epochs,
        "payload_fields_added_bytes": fields_added,
        "ciphertext_bytes_added": {
            "mean": round(statistics.mean(added), 1), "median": statistics.median(added), "max": max(added),
            "share_of_lengths_that_grow": round(grew / len(added), 3),
        },
        "sender_us_per_message": {"without": encode_plain, "with": encode_gossip, "added": round(encode_gossip - encode_plain, 2)},
        "receiver_us_per_message_same_epoch": {
            "decode_without": decode_plain, "decode_and_check": decode_check, "added": round(decode_check - decode_plain, 2),
        },
        "consistency_proof_hashes": len(consistency_proof(args.epochs // 2, leaves, cache)),
        "verify_us_per_check_of_another_epoch": round(statistics.median(verify_us), 1),
        "statement_bytes": len(statement),
        "auditor_us_per_lookup": auditor_us,
        **({"mesh": mesh_figures} if mesh_figures is not None else {}),
    }, indent=1))


if __name__ == "__main__":
    main()
