"""Disappearing messages through the public SDK on the real three-region mesh (issue 14).

Either party sets the conversation's timer (an encrypted control message to
every device of both accounts; the latest ``(set_at_ms, set_by)`` wins). A
message is deleted by each device when due (inbox row, kept plaintext, WAL
scrubbed), and its envelope is stored with the timer as ``Nats-TTL``, so the
server's copy is gone no later.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from xchat.client import Client, ControlRejected, DisappearingTimerChanged, MessageExpired
from xchat.client._controls import TIMER_CONTENT_TYPE, encode_timer
from xchat.mesh.local import LocalMesh
from xchat.relay.sending import envelope_ttl
from xchat.v1 import relay_pb2, relay_pb2_grpc

from tests.client.mailbox_records import stored_headers

Peer = Any  # tests/client/conftest.py's Peer
Peers = Callable[..., Awaitable[Peer]]




async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


def _files_hold(path: Path, marker: bytes) -> bool:
    return any(p.exists() and marker in p.read_bytes() for p in (path, Path(f"{path}-wal")))


async def test_a_two_second_message_is_gone_from_both_devices_and_from_the_stream(
    peers: Peers, mesh: LocalMesh, tmp_path: Path
) -> None:
    alice, bob = await peers("a"), await peers("c", ack=False)  # bob's app never acknowledges
    await alice.client.set_disappearing(bob.account, 2)
    changed = await bob.event(DisappearingTimerChanged)
    assert (changed.conversation, changed.seconds, changed.set_by) == (alice.account, 2, alice.account)
    assert bob.client.conversation_settings(alice.account).disappearing_s == 2

    marker = f"vanishing {secrets.token_hex(8)}"
    message_id = (await alice.client.send(bob.account, marker))[0].message_id
    shown = await bob.message(marker)
    assert shown.expires_at_ms is not None and shown.expires_at_ms <= int(time.time() * 1000) + 2_500
    stored = await stored_headers(mesh, bob.client.device_id)
    if message_id in stored:  # (already expired on a very slow machine)
        assert stored[message_id].get("Nats-TTL") == "2s"

    # Due: both devices delete it and say so; the stream no longer holds it (never acknowledged).
    expired = await bob.event(MessageExpired, lambda e: e.message_id == message_id)
    assert expired.conversation == alice.account
    await alice.event(MessageExpired, lambda e: e.message_id == message_id)

    async def stream_empty() -> bool:
        return message_id not in await stored_headers(mesh, bob.client.device_id)

    await _until(stream_empty, "the server's copy outlived the timer")
    bob_db, alice_db = tmp_path / "p1.db", tmp_path / "p0.db"
    db = sqlite3.connect(f"file:{bob_db}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0
    finally:
        db.close()
    db = sqlite3.connect(f"file:{alice_db}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM resendable WHERE message_id = ?", (message_id,)).fetchone()[0] == 0
    finally:
        db.close()

    async def scrubbed() -> bool:
        return not _files_hold(bob_db, marker.encode()) and not _files_hold(alice_db, marker.encode())

    await _until(scrubbed, "the plaintext is still in a state file or its WAL")


async def test_both_parties_converge_on_the_latest_setting(peers: Peers) -> None:
    alice, bob = await peers("a"), await peers("b")
    await alice.client.send(bob.account, "hi")
    await bob.message("hi")
    await asyncio.gather(alice.client.set_disappearing(bob.account, 60), bob.client.set_disappearing(alice.account, 3600))
    # Each device hears the other's setting and keeps the later one (the earlier is ignored there).
    await alice.until(
        lambda: alice.client.conversation_settings(bob.account) == bob.client.conversation_settings(alice.account)
        and alice.events_of(DisappearingTimerChanged) + bob.events_of(DisappearingTimerChanged)
    )
    ours = alice.client.conversation_settings(bob.account)
    assert ours.disappearing_s == (60 if ours.timer_set_by == alice.account else 3600)
    (winner,) = alice.events_of(DisappearingTimerChanged) + bob.events_of(DisappearingTimerChanged)
    assert (winner.set_at_ms, winner.set_by, winner.seconds) == (ours.timer_set_at_ms, ours.timer_set_by, ours.disappearing_s)
    # An older setting arriving late changes nothing.
    await bob.client._send_control(alice.account, TIMER_CONTENT_TYPE, encode_timer(alice.account, 5, 1))
    await bob.client.send(alice.account, "after")
    await alice.message("after")
    assert alice.client.conversation_settings(bob.account) == ours
    # Off again, from either side.
    await bob.client.set_disappearing(alice.account, 0)
    await alice.until(lambda: alice.client.conversation_settings(bob.account).disappearing_s == 0)


async def test_a_timer_change_from_outside_the_conversation_is_refused(peers: Peers) -> None:
    """Mallory names the alice-bob conversation in a timer sent to bob: bob's timer with alice is untouched."""
    alice, bob, mallory = await peers("a"), await peers("b"), await peers("c")
    await alice.client.set_disappearing(bob.account, 3600)
    await bob.event(DisappearingTimerChanged)

    forged = encode_timer(alice.account, 1, int(time.time() * 1000) + 60_000)
    await mallory.client._send_control(bob.account, TIMER_CONTENT_TYPE, forged)
    rejected = await bob.event(ControlRejected)
    assert (rejected.account, rejected.kind) == (mallory.account, "timer")
    assert bob.client.conversation_settings(alice.account).disappearing_s == 3600
    assert bob.client.conversation_settings(mallory.account).disappearing_s == 0


async def test_relay_bounds_the_ttl_hint_by_the_mailbox_ttl(peers: Peers, mesh: LocalMesh, tmp_path: Path) -> None:
    assert envelope_ttl(0, 3600) is None and envelope_ttl(5, 3600) == 5
    assert envelope_ttl(3600, 3600) is None and envelope_ttl(2**32 - 1, 3600) is None
    alice = await peers("a")
    async with await Client.open(tmp_path / "quiet.db", mesh.endpoints("b")) as quiet:  # reads nothing
        await quiet.register(f"quiet{secrets.token_hex(4)}")
        quiet_device = quiet.device_id
    raw_id = secrets.token_bytes(16)
    request = relay_pb2.SendRequest(recipient_device_id=quiet_device, message_id=raw_id, ciphertext=b"x", ttl_seconds=2**32 - 1)
    await alice.client._tokens.authed(
        lambda ch, t, md: relay_pb2_grpc.RelayStub(ch).Send(request, timeout=t, metadata=md), service="relay"
    )
    headers = (await stored_headers(mesh, quiet_device))[raw_id]
    assert "Nats-TTL" not in headers  # the stream's max_age applies


async def test_every_device_of_both_accounts_honours_the_timer(peers: Peers, mesh: LocalMesh, tmp_path: Path) -> None:
    """Alice's second device learns the timer her first device set (a copy to our own devices), and
    deletes bob's disappearing message when due, like her first device."""
    alice, bob = await peers("a"), await peers("c")
    code = await alice.client.link_device()
    second = await Client.open_linked(code, tmp_path / "alice2.db", mesh.endpoints("b"))
    alice2 = type(alice)(second, ack=True)  # the fixture's Peer around the linked device
    try:
        await bob.client.send(alice.account, "hello both")  # bob learns alice's two devices
        await alice2.message("hello both")
        await alice.client.set_disappearing(bob.account, 2)
        changed = await alice2.event(DisappearingTimerChanged)
        assert (changed.conversation, changed.seconds, changed.set_by) == (bob.account, 2, alice.account)
        await bob.event(DisappearingTimerChanged)

        message_id = (await bob.client.send(alice.account, "gone soon"))[0].message_id
        for device in (alice, alice2):
            shown = await device.message("gone soon")
            assert shown.expires_at_ms is not None
            await device.event(MessageExpired, lambda e: e.message_id == message_id)
        await bob.event(MessageExpired, lambda e: e.message_id == message_id)
    finally:
        await alice2.close()
