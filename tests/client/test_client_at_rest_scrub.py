"""The WAL scrub of secure deletion is bounded: coalesced, deferred past open transactions, never skipped.

``LocalState`` alone (no network): a burst of commits that supersede secrets
shares one checkpoint per ``scrub_delay`` while an event loop runs; a
transaction that spans the timer (the receive path awaits inside one) delays
the scrub instead of failing it; without an event loop the commit scrubs at
once. In every case the WAL ends at zero bytes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from xchat.client._state import LocalState

DELAY = 0.3


def _counting(state: LocalState) -> list[float]:
    calls: list[float] = []
    scrub = state._scrubber.now  # noqa: SLF001

    def counted() -> None:
        calls.append(time.monotonic())
        scrub()

    state._scrubber.now = counted  # type: ignore[method-assign]  # noqa: SLF001
    return calls


def _wal_size(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else 0


async def _until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_burst_of_commits_shares_scrubs_and_the_wal_ends_empty(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    state = LocalState(db, scrub_delay=DELAY)
    calls = _counting(state)
    started = time.monotonic()
    for i in range(200):
        with state.transaction(durable=False):
            state.put_session("aa" * 16, "bob", i.to_bytes(4, "big") * 500)
        await asyncio.sleep(0)
    burst = time.monotonic() - started
    assert _wal_size(db) > 0  # the burst's page versions wait for the scrub
    await _until(lambda: len(calls) >= 1 and _wal_size(db) == 0)
    # One scrub per DELAY at most (plus the one that may be due as the burst ends).
    assert len(calls) <= burst / DELAY + 2, (len(calls), burst)
    state.close()


async def test_a_transaction_spanning_the_timer_delays_the_scrub(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    state = LocalState(db, scrub_delay=DELAY)
    calls = _counting(state)
    with state.transaction():
        state.put_session("aa" * 16, "bob", b"first state")
    state.begin()
    state.put_session("aa" * 16, "bob", b"second state")
    await asyncio.sleep(3 * DELAY)  # the timer fires while the transaction is open
    assert calls == []
    state.commit()
    await _until(lambda: len(calls) == 1 and _wal_size(db) == 0)
    assert state.session("aa" * 16) == b"second state"
    state.close()


def test_without_an_event_loop_each_commit_scrubs_at_once(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    state = LocalState(db)
    calls = _counting(state)
    with state.transaction():
        state.put_session("aa" * 16, "bob", b"state")
    assert len(calls) == 1 and _wal_size(db) == 0
    state.add_pending_acks([1, 2])  # book-keeping that supersedes no secret: no scrub
    assert len(calls) == 1
    state.close()
