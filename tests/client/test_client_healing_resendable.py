"""The sender's copies kept for retry requests (``resendable``), on ``LocalState`` alone: bounded
by count and age, handed out only for the device and account they were sent to, deleted once
handed out, sealed under the state key, and cheap to prune on every send batch."""

from __future__ import annotations

import os
import time
from pathlib import Path

from xchat.client._state import LocalState


def _ids(n: int) -> list[bytes]:
    return [i.to_bytes(16, "big") for i in range(n)]


def test_kept_for_exactly_their_recipient_and_handed_out_once(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "s.db")
    try:
        with state.transaction():
            state.add_resendable(b"\x01" * 16, "bob-phone", "bob", b"for bob's phone")
            state.add_resendable(b"\x01" * 16, "bob-laptop", "bob", b"for bob's laptop")
        assert state.take_resendable("mallory-phone", "mallory", [b"\x01" * 16]) == []
        assert state.take_resendable("bob-phone", "mallory", [b"\x01" * 16]) == []  # device filed under another account
        assert state.take_resendable("bob-phone", "bob", [b"\x01" * 16, b"\x02" * 16]) == [b"for bob's phone"]
        assert state.take_resendable("bob-phone", "bob", [b"\x01" * 16]) == []  # once
        assert state.take_resendable("bob-laptop", "bob", [b"\x01" * 16]) == [b"for bob's laptop"]
    finally:
        state.close()


def test_bounded_by_count_and_age(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "s.db")
    try:
        ids = _ids(30)
        with state.transaction():
            for message_id in ids:
                state.add_resendable(message_id, "d", "a", b"p")
            state.prune_resendable(older_than_ms=0, keep=10)
        assert state.take_resendable("d", "a", ids[:20]) == []
        assert len(state.take_resendable("d", "a", ids[20:])) == 10
        with state.transaction():
            state.add_resendable(ids[0], "d", "a", b"p")
            state.prune_resendable(older_than_ms=int(time.time() * 1000) + 1, keep=10)
        assert state.take_resendable("d", "a", ids[:1]) == []  # past the age
    finally:
        state.close()


def test_sealed_under_the_state_key(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    state = LocalState(db, state_key=os.urandom(32))
    try:
        with state.transaction():
            state.add_resendable(b"\x01" * 16, "d", "a", b"PLAINTEXT-MARKER-kept-for-resend")
        state._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # noqa: SLF001
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
        assert b"PLAINTEXT-MARKER" not in raw
        assert state.take_resendable("d", "a", [b"\x01" * 16]) == [b"PLAINTEXT-MARKER-kept-for-resend"]
    finally:
        state.close()


def test_pruning_at_the_bound_costs_microseconds(tmp_path: Path) -> None:
    """Pruned on every send batch: with the table full it must not scan it (it did: ~700 us)."""
    state = LocalState(tmp_path / "s.db")
    try:
        with state.transaction():
            for message_id in _ids(2000):
                state.add_resendable(message_id, "d", "a", b"p" * 160)
        state.begin(durable=False)
        start = time.process_time()
        for _ in range(200):
            state.prune_resendable(older_than_ms=0, keep=2000)
        per_prune = (time.process_time() - start) / 200
        state.commit()
        assert per_prune < 200e-6, f"{per_prune * 1e6:.0f} us per prune"
    finally:
        state.close()
