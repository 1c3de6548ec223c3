"""Group fsync off the loop (``_walsync``): shared by concurrent commits, and nothing acted on before it.

The send and receive paths commit without fsync and wait for one shared
``fdatasync`` of the WAL in a worker thread. What must hold: every caller's
commit is on disk when ``sync()`` returns (a flush that started before the
commit does not count), concurrent commits share flushes, and no envelope
leaves and no message reaches the app while the flush that covers it has not
finished (else a power loss could roll back a ratchet whose ciphertext left).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from xchat.client import Client, _walsync
from xchat.client._state import LocalState
from xchat.mesh.local import LocalMesh


class HeldFlush:
    """Replaces the WAL flush: records each flushed path, and blocks while ``hold`` is set.

    ``only``: hold only the flushes of WAL files whose name contains it (another client flushes freely).
    """

    def __init__(self) -> None:
        self.flushed: list[str] = []
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.release.set()
        self.only = ""
        self._real = _walsync._flush

    def __call__(self, wal: Path) -> None:
        if self.only in wal.name:
            self.started.release()
            self.release.wait(30)
        self._real(wal)
        self.flushed.append(str(wal))

    def hold(self, only: str = "") -> None:
        self.only = only
        self.release.clear()


@pytest.fixture
def held_flush(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldFlush]:
    flush = HeldFlush()
    monkeypatch.setattr(_walsync, "_flush", flush)
    yield flush
    flush.release.set()


@contextlib.asynccontextmanager
async def _alice_and_bob(mesh: LocalMesh, tmp_path: Path) -> AsyncIterator[tuple[Client, Client, str]]:
    """Alice homed in a, bob in c, both registered: (alice, bob, bob's account)."""
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("c")
    ) as bob:
        bob_name = f"walsync-b-{uuid.uuid4().hex[:8]}"
        await alice.register(f"walsync-a-{uuid.uuid4().hex[:8]}")
        await bob.register(bob_name)
        yield alice, bob, bob_name


def _commit(state: LocalState, key: str) -> None:
    with state.transaction(durable=False):
        state.set_meta(key, os.urandom(16))


async def test_a_sync_waits_for_a_flush_that_started_after_its_commit(tmp_path: Path, held_flush: HeldFlush) -> None:
    state = LocalState(tmp_path / "s.db")
    try:
        _commit(state, "one")
        held_flush.hold()
        first = asyncio.create_task(state.sync())
        await asyncio.to_thread(held_flush.started.acquire, True, 10)  # flush 1 runs, covering "one" only
        _commit(state, "two")
        second = asyncio.create_task(state.sync())
        held_flush.release.set()
        await asyncio.wait_for(first, 10)
        assert not second.done(), "a flush that started before the commit cannot cover it"
        await asyncio.wait_for(second, 10)
        assert held_flush.flushed == [str(tmp_path / "s.db-wal")] * 2
    finally:
        state.close()


async def test_concurrent_commits_share_flushes(tmp_path: Path, held_flush: HeldFlush) -> None:
    state = LocalState(tmp_path / "s.db")
    try:
        held_flush.hold()
        _commit(state, "first")
        first = asyncio.create_task(state.sync())
        await asyncio.to_thread(held_flush.started.acquire, True, 10)
        waiters = []
        for index in range(50):  # all committed while flush 1 runs: one more flush serves them all
            _commit(state, f"k{index}")
            waiters.append(asyncio.create_task(state.sync()))
        held_flush.release.set()
        await asyncio.wait_for(asyncio.gather(first, *waiters), 10)
        assert len(held_flush.flushed) == 2
    finally:
        state.close()


async def test_a_cancelled_caller_does_not_cancel_the_shared_flush(tmp_path: Path, held_flush: HeldFlush) -> None:
    state = LocalState(tmp_path / "s.db")
    try:
        _commit(state, "one")
        held_flush.hold()
        quitter = asyncio.create_task(state.sync())
        stayer = asyncio.create_task(state.sync())
        await asyncio.to_thread(held_flush.started.acquire, True, 10)
        quitter.cancel()
        held_flush.release.set()
        await asyncio.wait_for(stayer, 10)
        assert held_flush.flushed == [str(tmp_path / "s.db-wal")]
    finally:
        state.close()


async def test_nothing_leaves_or_reaches_the_app_before_its_flush(mesh: LocalMesh, tmp_path: Path, held_flush: HeldFlush) -> None:
    async with _alice_and_bob(mesh, tmp_path) as (alice, bob, bob_name):
        inbox = bob.messages()
        await alice.send(bob_name, "hello")  # the session (PQXDH) is set up outside the hold
        first = await asyncio.wait_for(anext(inbox), 15)
        await bob.ack(first)

        held_flush.hold()
        sending = asyncio.create_task(alice.send(bob_name, "held"))
        receiving = asyncio.create_task(anext(inbox))
        await asyncio.to_thread(held_flush.started.acquire, True, 10)  # alice's commit waits for its flush
        await asyncio.sleep(1.5)
        # Not acknowledged by relay (it never left), and bob has nothing to read.
        assert not sending.done()
        assert not receiving.done()
        held_flush.release.set()
        await asyncio.wait_for(sending, 15)
        message = await asyncio.wait_for(receiving, 15)
        assert message.text == "held"
        await bob.ack(message)
        await inbox.aclose()


async def test_a_received_batch_reaches_the_app_only_after_its_flush(mesh: LocalMesh, tmp_path: Path, held_flush: HeldFlush) -> None:
    async with _alice_and_bob(mesh, tmp_path) as (alice, bob, bob_name):
        await alice.send(bob_name, "stored while bob is away")
        held_flush.hold()
        inbox = bob.messages()
        receiving = asyncio.create_task(anext(inbox))
        # bob's batch is decrypted and committed, then waits for its flush.
        await asyncio.to_thread(held_flush.started.acquire, True, 10)
        await asyncio.sleep(1.0)
        assert not receiving.done()
        held_flush.release.set()
        message = await asyncio.wait_for(receiving, 15)
        assert message.text == "stored while bob is away"
        await bob.ack(message)
        await inbox.aclose()


def _inbox_rows(path: Path) -> int:
    """Rows in a client's inbox, read by another connection (committed, flushed or not)."""
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM inbox").fetchone()[0])


async def test_batches_received_during_a_flush_are_decrypted_meanwhile_and_share_the_next(
    mesh: LocalMesh, tmp_path: Path, held_flush: HeldFlush
) -> None:
    async with _alice_and_bob(mesh, tmp_path) as (alice, bob, bob_name):
        inbox = bob.messages()
        await alice.send(bob_name, "warm-up")
        await bob.ack(await asyncio.wait_for(anext(inbox), 15))
        received: list[str] = []

        async def read(count: int) -> None:
            for _ in range(count):
                message = await anext(inbox)
                received.append(message.text)
                await bob.ack(message)

        held_flush.hold(only="b.db")
        reading = asyncio.create_task(read(3))
        try:
            for text in ("one", "two", "three"):  # separate responses on bob's stream
                await alice.send(bob_name, text)
            # All three decrypted and committed while bob's first flush is still held...
            deadline = asyncio.get_running_loop().time() + 15
            while _inbox_rows(tmp_path / "b.db") < 3:
                assert asyncio.get_running_loop().time() < deadline, "bob stopped decrypting while a flush ran"
                await asyncio.sleep(0.05)
            # ...and none handed to the app before its flush.
            assert received == []
            flushes_before = held_flush.flushed.count(str(tmp_path / "b.db-wal"))
            held_flush.release.set()
            await asyncio.wait_for(reading, 15)
        finally:
            held_flush.release.set()
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        assert received == ["one", "two", "three"]
        # The held flush covered "one"; "two" and "three", committed meanwhile, shared the next one.
        assert held_flush.flushed.count(str(tmp_path / "b.db-wal")) - flushes_before <= 2
        await inbox.aclose()
