"""Micro-benchmark of the ratchet hot path (not collected by pytest).

    .venv/bin/python tests/crypto/bench_ratchet.py [--messages N]

Prints JSON: median µs for one small message encrypted and decrypted one way
(same chain, the common case), for a message that forces a DH ratchet step,
and for PQXDH session setup.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from xchat.client.crypto import (
    IdentityKeyPair,
    Payload,
    PrekeyBundle,
    PrekeyStore,
    Session,
    initiate_session,
    respond_to_session,
)


def _setup() -> tuple[float, Session, Session]:
    alice, bob = IdentityKeyPair.generate(), IdentityKeyPair.generate()
    store = PrekeyStore(bob)
    store.generate_signed_prekey()
    store.generate_one_time_prekeys(1)
    store.generate_pq_prekeys(1)
    store.generate_last_resort_pq()
    bundle = PrekeyBundle.from_store(store)
    start = time.perf_counter()
    a, _ = initiate_session(alice, bundle)
    b, _ = respond_to_session(bob, store, a.encrypt(Payload.new(b"hi", counter=0)))
    return time.perf_counter() - start, a, b


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    n = parser.parse_args().messages
    setups = []
    for _ in range(20):
        elapsed, a, b = _setup()
        setups.append(elapsed)
    a.decrypt(b.encrypt(Payload.new(b"reply", counter=0)))
    payload = Payload.new(b"x" * 100, counter=1, content_type="text/plain")
    one_way, ratchet_step = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        b.decrypt(a.encrypt(payload))
        one_way.append(time.perf_counter() - t0)
    for _ in range(min(n, 300)):
        t0 = time.perf_counter()
        a.decrypt(b.encrypt(payload))  # new chain each time
        ratchet_step.append(time.perf_counter() - t0)
        b.decrypt(a.encrypt(payload))
    print(
        json.dumps(
            {
                "messages": n,
                "body_bytes": len(payload.body),
                "median_us_per_message_one_way": round(statistics.median(one_way) * 1e6, 1),
                "p95_us_per_message_one_way": round(sorted(one_way)[int(0.95 * n)] * 1e6, 1),
                "median_us_per_message_with_dh_ratchet_step": round(
                    statistics.median(ratchet_step) * 1e6, 1
                ),
                "median_us_pqxdh_session_setup": round(statistics.median(setups) * 1e6, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
