"""Typing and presence through the public SDK on the real three-region mesh (issue 14).

Signals are sealed end to end, published by relay on core NATS and handed to
the recipient's open Sync by whichever mailbox process holds it: never
stored, never acknowledged, dropped for an offline device, rate-limited per
sender and per recipient, optional per user. The attacks: a forged sender, a
replayed or stale signal, a flood.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from xchat.client import Client, MessagesDelivered, Online, RequestRejected, Typing
from xchat.client._signals import KIND_TYPING, encode_signal
from xchat.client.crypto.identity import IdentityKeyPair
from xchat.client.crypto.sealed import seal
from xchat.mesh.local import LocalMesh
from xchat.v1 import relay_pb2, relay_pb2_grpc

Peer = Any  # tests/client/conftest.py's Peer
Peers = Callable[..., Awaitable[Peer]]
# Cross-region delivery of a signal on a loaded 2-core machine: measured well under 100 ms.
TYPING_BOUND_S = 5.0
QUIET_S = 1.5


async def _acquainted(a: Peer, b: Peer) -> None:
    """Sessions both ways (signals go to devices we hold a session with)."""
    await a.client.send(b.account, f"hi {b.account}")
    await b.message(f"hi {b.account}")
    await b.client.send(a.account, f"hi {a.account}")
    await a.message(f"hi {a.account}")


async def _event(peer: Peer, kind: type, where: Callable[[Any], bool] = lambda e: True, timeout: float = 20.0) -> Any:
    return await peer.until(lambda: next((e for e in peer.events if isinstance(e, kind) and where(e)), None), timeout)


async def _stream_positions(mesh: LocalMesh) -> dict[str, tuple[int, int]]:
    """(messages, last sequence) of every stream but the key transparency log (its epochs tick on their own)."""
    nc = await nats.connect(mesh.nats_urls("a"), **mesh.admin_credentials)
    try:
        infos = await nc.jetstream().streams_info()
        return {i.config.name: (i.state.messages, i.state.last_seq) for i in infos if i.config.name != "XCHAT_KT"}
    finally:
        await nc.close()


async def _settled_positions(mesh: LocalMesh, timeout: float = 20.0) -> dict[str, tuple[int, int]]:
    """Stream positions once two reads 0.5 s apart agree (bounded)."""
    deadline = time.monotonic() + timeout
    last = await _stream_positions(mesh)
    while True:
        await asyncio.sleep(0.5)
        now = await _stream_positions(mesh)
        if now == last or time.monotonic() > deadline:
            return now
        last = now


async def _raw_send(peer: Peer, recipient: str, ciphertext: bytes) -> int:
    """SendEphemeral with ``peer``'s own credentials and bytes of the test's choosing (a hostile client)."""
    request = relay_pb2.EphemeralBatch(items=[relay_pb2.EphemeralItem(recipient_device_id=recipient, ciphertext=ciphertext)])
    result = await peer.client._tokens.authed(
        lambda ch, t, md: relay_pb2_grpc.RelayStub(ch).SendEphemeral(request, timeout=t, metadata=md), service="relay"
    )
    return int(result.published)


async def test_typing_crosses_regions_and_nothing_is_stored(peers: Peers, mesh: LocalMesh) -> None:
    alice, bob = await peers("a"), await peers("c")
    await _acquainted(alice, bob)
    await bob.client.backlog_done.wait()
    # Delivered receipts (end-to-end messages of their own) and their acks settle first.
    await _event(alice, MessagesDelivered)
    await _event(bob, MessagesDelivered)
    before = await _settled_positions(mesh)

    started = time.monotonic()
    await alice.client.set_typing(bob.account, True)
    typing = await _event(bob, Typing, timeout=TYPING_BOUND_S)
    took = time.monotonic() - started
    assert typing == Typing(alice.account, alice.client.device_id, True)
    await alice.client.set_typing(bob.account, False)
    assert (await _event(bob, Typing, lambda e: not e.on, timeout=TYPING_BOUND_S)).device == alice.client.device_id
    await alice.client.announce_online(bob.account)
    assert await _event(bob, Online, timeout=TYPING_BOUND_S) == Online(alice.account, alice.client.device_id)

    # Never stored: no stream or bucket moved; never a message.
    assert await _stream_positions(mesh) == before
    assert [m.text for m in bob.messages] == [f"hi {bob.account}"]
    print(f"typing indicator a -> c arrived in {took * 1000:.0f} ms")
    assert took < TYPING_BOUND_S


async def test_an_offline_device_gets_nothing_later(peers: Peers, mesh: LocalMesh, tmp_path: Path) -> None:
    alice = await peers("a")
    bob_client = await Client.open(tmp_path / "bob.db", mesh.endpoints("b"))
    await bob_client.register(f"bob{alice.account[1:]}")
    bob_account = bob_client.account
    await alice.client.send(bob_account, "before")
    async for message in bob_client.messages():
        await bob_client.ack(message)
        break
    await bob_client.send(alice.account, "back")
    await alice.message("back")
    await bob_client.close()  # offline: no Sync open anywhere

    await alice.client.set_typing(bob_account, True)  # relay publishes; nobody holds it
    await asyncio.sleep(0.2)
    await alice.client.send(bob_account, "after")

    reopened = await Client.open(tmp_path / "bob.db", mesh.endpoints("b"))
    events: list[object] = []
    watcher = asyncio.create_task(_collect(reopened, events))
    try:
        async with asyncio.timeout(20):
            async for message in reopened.messages():
                await reopened.ack(message)
                if message.text == "after":
                    break
        await asyncio.sleep(QUIET_S)
        assert not [e for e in events if isinstance(e, Typing)]
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await reopened.close()


async def _collect(client: Client, into: list[object]) -> None:
    async for event in client.events():
        into.append(event)


async def test_opt_out_neither_sends_nor_shows(peers: Peers) -> None:
    alice, bob = await peers("a"), await peers("b")
    await _acquainted(alice, bob)
    bob.client.set_typing_indicators(False)

    await alice.client.set_typing(bob.account, True)
    await bob.client.set_typing(alice.account, True)
    await bob.client.announce_online(alice.account)
    # Order per pair of devices: once these messages arrive, signals sent before them had time to.
    await alice.client.send(bob.account, "barrier 1")
    await bob.client.send(alice.account, "barrier 2")
    await bob.message("barrier 1")
    await alice.message("barrier 2")
    await asyncio.sleep(QUIET_S)
    assert not bob.events_of(Typing) and not alice.events_of(Typing) and not alice.events_of(Online)

    bob.client.set_typing_indicators(True)
    await alice.client.set_typing(bob.account, False)
    assert (await bob.event(Typing)).on is False


async def test_a_flood_is_limited_per_sender_and_per_recipient(peers: Peers) -> None:
    # alice and carol on one relay process: replicas share spending by gossip, a moment later.
    alice, bob, carol = await peers("a"), await peers("b"), await peers("a")
    await _acquainted(alice, bob)
    await _acquainted(carol, bob)

    # Concurrent calls, so the bucket's refill (2/s) barely matters however loaded the machine is.
    async def flood(peer: Peer, calls: int) -> list[str]:
        async def one(i: int) -> str:
            try:
                await peer.client.set_typing(bob.account, i % 2 == 0)  # alternating: no SDK-side suppression
            except RequestRejected as exc:
                return exc.code
            return "OK"

        return list(await asyncio.gather(*(one(i) for i in range(calls))))

    # Per sender: past the burst (10), RESOURCE_EXHAUSTED.
    outcomes = await flood(alice, 30)
    assert set(outcomes) == {"OK", "RESOURCE_EXHAUSTED"} and outcomes.count("OK") <= 16, outcomes
    # Per recipient: carol's own budget is untouched (9 < her burst), but bob's is spent.
    outcomes = await flood(carol, 9)
    assert outcomes.count("RESOURCE_EXHAUSTED") >= 3, outcomes


async def test_forged_replayed_and_stale_signals_are_dropped(peers: Peers) -> None:
    alice, bob, mallory = await peers("a"), await peers("b"), await peers("c")
    await _acquainted(alice, bob)
    await _acquainted(mallory, bob)
    bob_device = bob.client.device_id
    bob_identity = bob.client._book.pinned_identity  # noqa: F841 - bob's side is not used to forge
    bob_key = alice.client._book.pinned_identity(bob_device)
    assert bob_key is not None

    def sealed(sender: Peer, identity: IdentityKeyPair, *, claimed: Peer, sent_ms: int, on: int) -> bytes:
        inner = encode_signal(identity.sign, KIND_TYPING, on, sent_ms, bob_device)
        return seal(sender_account=claimed.account, sender_device=claimed.client.device_id, inner=inner,
                    recipient_identity=bob_key)

    now_ms = int(time.time() * 1000)
    # Mallory claims to be alice, signing with her own identity key: the signature does not verify.
    forged = sealed(mallory, mallory.client._book.identity, claimed=alice, sent_ms=now_ms, on=1)
    assert await _raw_send(mallory, bob_device, forged) == 1
    # Alice's genuine signal, a minute old: stale.
    stale = sealed(alice, alice.client._book.identity, claimed=alice, sent_ms=now_ms - 60_000, on=1)
    assert await _raw_send(alice, bob_device, stale) == 1
    # Garbage that does not even unseal.
    assert await _raw_send(mallory, bob_device, b"\x03" + bytes(200)) == 1
    # One genuine signal, sent twice (a relay replaying it): shown once.
    genuine = sealed(alice, alice.client._book.identity, claimed=alice, sent_ms=now_ms, on=0)
    assert await _raw_send(alice, bob_device, genuine) == 1
    assert await _raw_send(alice, bob_device, genuine) == 1

    await bob.event(Typing)
    await asyncio.sleep(QUIET_S)
    assert bob.events_of(Typing) == [Typing(alice.account, alice.client.device_id, False)]
    assert bob.client._signals.dropped == 4


async def test_bad_signals_are_refused_by_relay(peers: Peers) -> None:
    alice = await peers("a")
    with pytest.raises(RequestRejected) as unknown:
        await _raw_send(alice, "00" * 16, b"x")
    assert unknown.value.code == "NOT_FOUND"
    with pytest.raises(RequestRejected) as big:
        await _raw_send(alice, alice.client.device_id, bytes(1025))
    assert big.value.code == "INVALID_ARGUMENT"
    empty = relay_pb2.EphemeralBatch()
    with pytest.raises(RequestRejected) as none:
        await alice.client._tokens.authed(
            lambda ch, t, md: relay_pb2_grpc.RelayStub(ch).SendEphemeral(empty, timeout=t, metadata=md), service="relay"
        )
    assert none.value.code == "INVALID_ARGUMENT"
