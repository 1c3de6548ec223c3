"""Regenerate tests/crypto/fixtures/sessions_v1.json (not collected by pytest).

Only run this when introducing a *new* format version, writing a new file next
to the old ones: the committed fixtures are what proves old blobs still load.

    .venv/bin/python tests/crypto/make_session_fixture.py
"""

from __future__ import annotations

import json
from pathlib import Path

from xchat.client.crypto import (
    SESSION_FORMAT_VERSION,
    IdentityKeyPair,
    Payload,
    PrekeyBundle,
    PrekeyStore,
    initiate_session,
    respond_to_session,
)

OUT = Path(__file__).parent / "fixtures" / f"sessions_v{SESSION_FORMAT_VERSION}.json"


def _p(counter: int, body: bytes) -> Payload:
    return Payload(
        message_id=counter.to_bytes(16, "big"),
        counter=counter,
        sent_at_ms=1_750_000_000_000 + counter,
        content_type="text/plain",
        body=body,
    )


def main() -> None:
    alice, bob, carol = (IdentityKeyPair.generate() for _ in range(3))
    store = PrekeyStore(bob)
    store.generate_signed_prekey(now_ms=1_750_000_000_000)
    store.generate_one_time_prekeys(3)
    store.generate_pq_prekeys(3)
    store.generate_last_resort_pq(now_ms=1_750_000_000_000)

    a, _ = initiate_session(alice, PrekeyBundle.from_store(store))
    b, _ = respond_to_session(bob, store, a.encrypt(_p(1, b"hello bob")))
    a.decrypt(b.encrypt(_p(1, b"hello alice")))
    b.decrypt(a.encrypt(_p(2, b"second")))
    skipped = a.encrypt(_p(3, b"delivered late"))
    b.decrypt(a.encrypt(_p(4, b"overtook")))  # leaves one skipped key in Bob's state
    pending = a.encrypt(_p(5, b"in flight while saved"))

    c, _ = initiate_session(carol, PrekeyBundle.from_store(store))
    carol_first = c.encrypt(_p(1, b"hi from carol"))

    fixture = {
        "comment": "Serialised by format version 1; must keep loading. Do not regenerate.",
        "alice_identity": alice.to_bytes().hex(),
        "bob_identity": bob.to_bytes().hex(),
        "carol_identity": carol.to_bytes().hex(),
        "alice_session": a.to_bytes().hex(),
        "bob_session": b.to_bytes().hex(),
        "bob_store": store.to_bytes().hex(),
        "carol_session": c.to_bytes().hex(),
        "to_bob": [
            {"wire": pending.hex(), "payload": _p(5, b"in flight while saved").encode().hex()},
            {"wire": skipped.hex(), "payload": _p(3, b"delivered late").encode().hex()},
        ],
        "carol_first": {"wire": carol_first.hex(), "payload": _p(1, b"hi from carol").encode().hex()},
    }
    OUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
