"""The SDK send and receive paths under concurrency, against the real three-region mesh (issue 18).

Every check reads what the recipient saw: each message exactly once, and per
conversation in the order it was sent (the sender's counter), whatever mix of
concurrent ``send()``, ``send_many()`` and outbox replay produced it. Waits
are bounded polls on what is read, never sleeps standing in for an outcome.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path

import nats
import pytest

from xchat.client import Client, ClientError, Message, SendReceipt
from xchat.core.store import MAILBOX_STREAM, mailbox_subject
from xchat.mesh.local import LocalMesh, free_port

TRANSPORT_LOGGER = "xchat.client._transport"


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _until(check: Callable[[], Awaitable[bool] | bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Polls ``check`` until it holds; fails after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _receive(inbox: AsyncGenerator[Message, None], client: Client, count: int) -> list[Message]:
    got = []
    for _ in range(count):
        message = await asyncio.wait_for(anext(inbox), 30)
        got.append(message)
        await client.ack(message)
    return got


async def _receive_until_sentinel(inbox: AsyncGenerator[Message, None], client: Client, sentinel: str) -> list[Message]:
    """Everything before ``sentinel``: sent last on the same conversation, so any duplicate arrives before it."""
    got = []
    while True:
        message = await asyncio.wait_for(anext(inbox), 30)
        await client.ack(message)
        if message.text == sentinel:
            return got
        got.append(message)


def _assert_in_order_once(messages: list[Message]) -> None:
    by_sender: dict[str, list[int]] = {}
    for message in messages:
        by_sender.setdefault(message.sender_account, []).append(message.counter)
    for sender, counters in by_sender.items():
        assert counters == sorted(set(counters)), f"{sender}: out of order or duplicated: {counters}"
    ids = [m.message_id for m in messages]
    assert len(ids) == len(set(ids)), "a message reached the app twice"


def _no_failover(caplog: pytest.LogCaptureFixture) -> None:
    failovers = [r.getMessage() for r in caplog.records if r.name == TRANSPORT_LOGGER and "failing over" in r.getMessage()]
    assert not failovers, f"failed over with no fault: {failovers}"


def _outbox_rows(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


async def test_64_concurrent_sends_are_acknowledged_once_and_received_in_order(
    mesh: LocalMesh, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xchat.client")
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("c")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        home = alice.endpoint
        # No session yet: the 64 calls share one bundle fetch and one group commit.
        results = await asyncio.gather(*(alice.send(bob_name, f"m{i}") for i in range(64)))
        receipts = [r for rs in results for r in rs]
        assert len(receipts) == 64 and all(isinstance(r, SendReceipt) and len(r.receipt) == 16 for r in receipts)
        assert not any(r.duplicate for r in receipts), "a send was published twice"
        assert len({r.receipt for r in receipts}) == 64
        inbox = bob.messages()
        got = await _receive(inbox, bob, 64)
        await inbox.aclose()
        _assert_in_order_once(got)
        assert sorted(m.text for m in got) == sorted(f"m{i}" for i in range(64))
        assert [m.counter for m in got] == list(range(1, 65))
        assert alice.endpoint == home and bob.endpoint == mesh.endpoints("c")[0]
    _no_failover(caplog)


async def test_send_send_many_and_outbox_replay_keep_each_conversation_in_order(
    mesh: LocalMesh, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alice_name, bob_name, carol_name = _name("alice"), _name("bob"), _name("carol")
    alice_db = tmp_path / "alice.db"
    async with await Client.open(tmp_path / "bob.db", mesh.endpoints("b")) as bob, await Client.open(
        tmp_path / "carol.db", mesh.endpoints("c")
    ) as carol:
        await bob.register(bob_name)
        await carol.register(carol_name)
        async with await Client.open(alice_db, mesh.endpoints("a")) as alice:
            await alice.register(alice_name)
            await alice.send_many([(bob_name, "first"), (carol_name, "first")])

        # No region reachable: sends are encrypted and queued, none leaves.
        async with await Client.open(alice_db, [f"127.0.0.1:{free_port()}"]) as alice:
            stuck = [asyncio.create_task(alice.send(peer, f"queued{i}")) for i in range(6) for peer in (bob_name, carol_name)]
            await _until(lambda: _outbox_rows(alice_db) == 12, what="12 queued envelopes")
        # Closing answered every waiting caller; the envelopes stay in the outbox.
        outcomes = await asyncio.gather(*stuck, return_exceptions=True)
        assert all(isinstance(o, ClientError) for o in outcomes)

        caplog.set_level(logging.INFO, logger="xchat.client")
        async with await Client.open(alice_db, mesh.endpoints("a")) as alice:
            calls: list[Awaitable[object]] = [alice.flush_outbox()]
            for i in range(16):
                calls.append(alice.send(bob_name if i % 2 else carol_name, f"single{i}"))
                if i % 4 == 0:
                    calls.append(alice.send_many([(bob_name, f"many{i}.{j}") for j in range(8)] + [(carol_name, f"many{i}")]))
            await asyncio.gather(*calls)
            assert await alice.flush_outbox() == []
            for client, peer in ((bob, bob_name), (carol, carol_name)):
                await alice.send(peer, "sentinel")
                inbox = client.messages()
                got = await _receive_until_sentinel(inbox, client, "sentinel")
                await inbox.aclose()
                _assert_in_order_once(got)
                texts = [m.text for m in got]
                # The replayed envelopes were queued first, so they arrive first.
                assert texts[:7] == ["first"] + [f"queued{i}" for i in range(6)]
                expected = 7 + 8 + (4 * 8 if peer == bob_name else 4)
                assert len(texts) == expected, texts
                assert [m.counter for m in got] == list(range(1, expected + 1))
    _no_failover(caplog)


async def test_crash_mid_flush_loses_and_duplicates_nothing(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    alice_db = tmp_path / "alice.db"
    async with await Client.open(tmp_path / "bob.db", mesh.endpoints("c")) as bob:
        await bob.register(bob_name)
        alice = await Client.open(alice_db, mesh.endpoints("a"))
        try:
            await alice.register(alice_name)
            await alice.send(bob_name, "hello")
            sends = [asyncio.create_task(alice.send(bob_name, f"m{i}")) for i in range(64)]
            # All 64 are encrypted in one commit; close while the rounds are in flight.
            await _until(lambda: any(t.done() for t in sends) or _outbox_rows(alice_db) > 0, what="a round in flight")
        finally:
            await alice.close()
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        acknowledged = {r.message_id for rs in outcomes if isinstance(rs, list) for r in rs}

        async with await Client.open(alice_db, mesh.endpoints("a")) as alice:
            replayed = await alice.flush_outbox()
            assert all(isinstance(o, SendReceipt) for o in replayed), replayed
            assert not {o.message_id for o in replayed} & acknowledged
            assert await alice.flush_outbox() == []
            await alice.send(bob_name, "sentinel")
        inbox = bob.messages()
        got = await _receive_until_sentinel(inbox, bob, "sentinel")
        await inbox.aclose()
        _assert_in_order_once(got)
        assert [m.text for m in got] == ["hello"] + [f"m{i}" for i in range(64)]
        assert acknowledged <= {m.message_id for m in got}


async def test_acked_messages_leave_the_mailbox_stream(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice:
        await alice.register(alice_name)
        bob = await Client.open(tmp_path / "bob.db", mesh.endpoints("c"))
        try:
            await bob.register(bob_name)
            device = bob.device_id
            await alice.send_many([(bob_name, f"m{i}") for i in range(100)])
            inbox = bob.messages()
            got = await _receive(inbox, bob, 100)
            await inbox.aclose()
            assert len({m.message_id for m in got}) == 100
        finally:
            # Straight after the last ack: close confirms what is still pending.
            await bob.close()

    await _until(_empty_mailbox(mesh, device), timeout=15, what=f"the mailbox of {device} to be empty")


CRASHING_RECEIVER = """
import asyncio, os, sys
from xchat.client import Client

async def main():
    client = await Client.open(sys.argv[1], sys.argv[2].split(","))
    inbox = client.messages()
    for _ in range(int(sys.argv[3])):
        await client.ack(await asyncio.wait_for(anext(inbox), 30))
    os._exit(0)  # a crash straight after the last ack: nothing closed, nothing flushed

asyncio.run(main())
"""


async def _mailbox_size(mesh: LocalMesh, device: str) -> int:
    nc = await nats.connect(mesh.nats_urls("a"), **mesh.admin_credentials)
    try:
        subject = mailbox_subject(device)
        info = await nc.jetstream().stream_info(MAILBOX_STREAM, subjects_filter=subject)
        return (info.state.subjects or {}).get(subject, 0)
    finally:
        await nc.close()


def _pending_acks(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM pending_acks").fetchone()[0])
    finally:
        db.close()


async def test_acks_made_before_a_crash_are_applied_by_the_next_run_and_nothing_is_shown_twice(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    bob_db = tmp_path / "bob.db"
    async with await Client.open(bob_db, mesh.endpoints("c")) as bob:
        await bob.register(bob_name)
        device = bob.device_id
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice:
        await alice.register(alice_name)
        await alice.send_many([(bob_name, f"m{i}") for i in range(200)])

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_RECEIVER, str(bob_db), ",".join(mesh.endpoints("c")), "200"
    )
    assert await asyncio.wait_for(process.wait(), 60) == 0
    assert _pending_acks(bob_db) > 0  # acknowledged, not yet known to be applied

    async with await Client.open(bob_db, mesh.endpoints("c")) as bob:
        shown: list[Message] = []

        async def read() -> None:
            async for message in bob.messages():
                shown.append(message)

        reader = asyncio.create_task(read())
        try:
            await asyncio.wait_for(bob.backlog_done.wait(), 30)
            await _until(_empty_mailbox(mesh, device), timeout=15, what=f"the mailbox of {device} to be empty")
            assert shown == [], "a message acknowledged before the crash was shown again"
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    assert _pending_acks(bob_db) == 0


def _empty_mailbox(mesh: LocalMesh, device: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await _mailbox_size(mesh, device) == 0

    return check


async def test_every_send_of_many_busy_apps_gets_its_own_receipt(mesh: LocalMesh, tmp_path: Path) -> None:
    """Six apps in one process (each committing its own encryptions durably), 48 concurrent
    senders, 1,200 sends: every call returns its own receipt. (Loaded drills saw calls fail
    with UNKNOWN "no longer queued" for messages that were stored; not reproduced here.)"""
    names = [_name(f"u{i}") for i in range(6)]
    clients = [await Client.open(tmp_path / f"{n}.db", mesh.endpoints("abc"[i % 3])) for i, n in enumerate(names)]
    try:
        for client, name in zip(clients, names):
            await client.register(name)
        pairs = [(clients[i], names[(i + 1) % 6]) for i in range(6)]
        for client, peer in pairs:
            await client.send(peer, "session")

        async def worker(client: Client, peer: str, w: int) -> list[SendReceipt]:
            return [r for i in range(25) for r in await client.send(peer, f"w{w}-{i}")]

        results = await asyncio.gather(
            *(worker(c, p, w) for c, p in pairs for w in range(8)), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, f"{len(failures)} sends failed: {failures[:3]}"
        receipts = [r for rs in results for r in rs]  # type: ignore[union-attr]
        assert len(receipts) == 6 * 8 * 25 and len({r.receipt for r in receipts}) == len(receipts)
    finally:
        for client in clients:
            await client.close()
