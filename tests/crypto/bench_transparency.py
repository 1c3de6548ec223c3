"""Key transparency's cost at scale (docs/adr/0014), on a simulated tree: proof sizes and verification time.

    .venv/bin/python tests/crypto/bench_transparency.py [--accounts 1000000] [--epochs 525600] [--lookups 2000]

Builds the map of ``--accounts`` accounts (random 32-byte leaf values) and a log
of ``--epochs`` epoch heads (a year of one per minute), then measures what one
SDK lookup carries and costs: the map proof (siblings, bytes on the wire with
empty siblings as one bit), the log's consistency proof from a random earlier
epoch and the head's inclusion proof, and the time to verify all of them plus
the head's Ed25519 signature. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import time

import nacl.signing

from xchat.client.crypto.merkle import (
    SparseMerkleTree,
    consistency_proof,
    inclusion_proof,
    log_root,
    map_root_from_proof,
    verify_consistency,
    verify_inclusion,
)
from xchat.client.crypto.transparency import EpochHead, map_key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=525_600)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(15)

    started = time.process_time()
    items = {map_key(f"user{i}"): os.urandom(32) for i in range(args.accounts)}
    tree = SparseMerkleTree.from_items(items)
    root = tree.root()
    build_s = time.process_time() - started

    leaves = [hashlib.sha256(b"\x00epoch %d" % i).digest() for i in range(args.epochs)]
    cache: dict[tuple[int, int], bytes] = {}
    started = time.process_time()
    new_root = log_root(leaves, cache)
    log_build_s = time.process_time() - started

    key = nacl.signing.SigningKey.generate()
    head = EpochHead(args.epochs - 1, root, 0, 0).signed(new_root, key)
    public = bytes(key.verify_key)

    siblings, wire, cons_len, incl_len, verify_us = [], [], [], [], []
    for n in range(args.lookups):
        present = n % 2 == 0
        account = f"user{rng.randrange(args.accounts)}" if present else f"absent{n}"
        proof = tree.proof(map_key(account))
        old = rng.randrange(1, args.epochs)
        cons = consistency_proof(old, leaves, cache)
        incl = inclusion_proof(args.epochs - 1, leaves, cache)
        old_root = log_root(leaves[:old], cache)
        siblings.append(len(proof.siblings))
        wire.append(proof.size())
        cons_len.append(len(cons))
        incl_len.append(len(incl))
        t0 = time.perf_counter()
        head.verify(public)
        got, value = map_root_from_proof(map_key(account), proof)
        assert got == root and (value is not None) == present
        verify_inclusion(args.epochs - 1, args.epochs, leaves[-1], incl, new_root)
        verify_consistency(old, args.epochs, old_root, new_root, cons)
        verify_us.append((time.perf_counter() - t0) * 1e6)

    def summary(values: list[float] | list[int]) -> dict[str, float]:
        ordered = sorted(values)
        return {"median": statistics.median(ordered), "p99": ordered[int(len(ordered) * 0.99) - 1], "max": ordered[-1]}

    print(json.dumps({
        "accounts": args.accounts,
        "epochs": args.epochs,
        "lookups": args.lookups,
        "map_build_cpu_s": round(build_s, 1),
        "log_build_cpu_s": round(log_build_s, 1),
        "map_proof_siblings": summary(siblings),
        "map_proof_bytes_compressed": summary(wire),
        "map_proof_bytes_uncompressed": summary([s * 32 + 64 for s in siblings]),
        "consistency_proof_hashes": summary(cons_len),
        "inclusion_proof_hashes": summary(incl_len),
        "verify_us_per_lookup": {k: round(v, 1) for k, v in summary(verify_us).items()},
    }, indent=1))


if __name__ == "__main__":
    main()
