"""Micro-benchmark of keys at rest and secure deletion (not collected by pytest).

    .venv/bin/python tests/client/bench_at_rest.py [--messages N]

One message end to end over two on-disk state files, as the SDK does it
(``SessionBook`` over ``LocalState``, no network): Alice encrypts and queues
it (one durable transaction), Bob opens and commits it (one durable
transaction), Bob acknowledges it (one non-durable transaction), inside a
running event loop so the WAL scrubs coalesce as in the SDK. Three modes:

* ``before``: no state key, secure_delete off, no WAL scrub (the SDK before issue 9)
* ``scrub``: no state key, secure deletion on (secure_delete + coalesced checkpoint(TRUNCATE))
* ``key+scrub``: a state key (every secret value sealed) and secure deletion

Prints JSON: wall and CPU µs per message (median of 3 runs), the AEAD cost
of sealing + opening one session-sized value, and what one scrub (the
checkpoint a lone message triggers 1 s later, on the event loop) takes.

``--only MODE --pause S`` runs one mode once, sleeping S seconds between
messages with the scrub delay at S/2 (a quiet conversation: one scrub per
message), for a syscall count that load does not blur::

    strace -f -c -e trace=fsync,fdatasync,pwrite64,ftruncate \
        .venv/bin/python tests/client/bench_at_rest.py --only scrub --messages 100 --pause 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from xchat.client._atrest import AeadFields
from xchat.client._sessions import SessionBook
from xchat.client._state import SCRUB_DELAY_S, LocalState
from xchat.client.crypto import PrekeyBundle

ALICE_DEV, BOB_DEV = "a" * 32, "b" * 32


def _state(path: Path, mode: str, scrub_delay: float = SCRUB_DELAY_S) -> LocalState:
    state = LocalState(path, state_key=os.urandom(32) if mode == "key+scrub" else None, scrub_delay=scrub_delay)
    if mode == "before":
        state._db.execute("PRAGMA secure_delete=OFF")  # noqa: SLF001
        state._scrubber.now = lambda: None  # type: ignore[method-assign]  # noqa: SLF001
    return state


async def _run(mode: str, n: int, pause: float = 0.0) -> tuple[float, float]:
    delay = pause / 2 if pause else SCRUB_DELAY_S
    with tempfile.TemporaryDirectory() as folder:
        alice_state, bob_state = _state(Path(folder) / "a.db", mode, delay), _state(Path(folder) / "b.db", mode, delay)
        alice, bob = SessionBook(alice_state), SessionBook(bob_state)
        alice.ensure_identity()
        bob.ensure_identity()
        bob.new_prekeys(one_time=3, pq=3, rotate_signed=True)
        alice.start_sessions("bob", [(BOB_DEV, PrekeyBundle.from_store(bob.prekeys))])
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            [item] = alice.encrypt(
                sender=("alice", ALICE_DEV), account="bob", devices=[BOB_DEV], body=b"x" * 100, content_type="text/plain"
            )
            opened = bob.open(item.message_id, item.ciphertext)
            assert opened is not None
            bob.commit(opened)
            with bob_state.transaction(durable=False):
                bob_state.mark_seen(item.message_id)
            await asyncio.sleep(pause)  # let due scrubs run, as the SDK's awaits do
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        alice_state.close()
        bob_state.close()
    return wall / n * 1e6, cpu / n * 1e6


def _aead_cost() -> float:
    fields = AeadFields(os.urandom(32))
    value = os.urandom(1500)  # a session blob with a few skipped keys
    start = time.perf_counter()
    for _ in range(10_000):
        fields.open("session", fields.seal("session", value))
    return (time.perf_counter() - start) / 10_000 * 1e6


def _scrub_cost(samples: int = 30) -> float:
    """Milliseconds of one checkpoint(TRUNCATE) after one message (the cost of a quiet conversation)."""
    with tempfile.TemporaryDirectory() as folder:
        alice_state, bob_state = LocalState(Path(folder) / "a.db"), LocalState(Path(folder) / "b.db")
        alice, bob = SessionBook(alice_state), SessionBook(bob_state)
        alice.ensure_identity()
        bob.ensure_identity()
        bob.new_prekeys(one_time=3, pq=3, rotate_signed=True)
        alice.start_sessions("bob", [(BOB_DEV, PrekeyBundle.from_store(bob.prekeys))])
        bob_state._scrubber.schedule = lambda: None  # type: ignore[method-assign]  # noqa: SLF001 - timed below
        took = []
        for _ in range(samples):
            [item] = alice.encrypt(
                sender=("alice", ALICE_DEV), account="bob", devices=[BOB_DEV], body=b"x" * 100, content_type="text/plain"
            )
            opened = bob.open(item.message_id, item.ciphertext)
            assert opened is not None
            bob.commit(opened)
            start = time.perf_counter()
            bob_state._scrubber.now()  # noqa: SLF001
            took.append(time.perf_counter() - start)
        alice_state.close()
        bob_state.close()
    return statistics.median(took) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--only", choices=("before", "scrub", "key+scrub"))
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()
    n = args.messages
    if args.only:
        wall_us, cpu_us = asyncio.run(_run(args.only, n, args.pause))
        print(json.dumps({"mode": args.only, "messages": n, "pause_s": args.pause, "cpu_us_per_message": round(cpu_us)}))
        return
    result: dict[str, object] = {
        "messages": n,
        "aead_seal_open_1500B_us": round(_aead_cost(), 1),
        "scrub_after_one_message_ms": round(_scrub_cost(), 2),
    }
    for mode in ("before", "scrub", "key+scrub"):
        runs = [asyncio.run(_run(mode, n)) for _ in range(3)]
        result[mode] = {
            "wall_us_per_message": round(statistics.median(r[0] for r in runs)),
            "cpu_us_per_message": round(statistics.median(r[1] for r in runs)),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
