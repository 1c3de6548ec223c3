"""Per-conversation order to the app survives envelopes the servers stored out of order (issue 10).

A sender's exact outbox envelopes (held back from its own delivery) are published
through relay's ``Send`` in a shuffled order, as a failover mid-pipeline can store
them; the recipient's ``messages()`` still yields them in sending order, once each.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from xchat.client import Client, OrderGap
from xchat.client._state import OutboxItem
from xchat.mesh.local import LocalMesh
from xchat.v1 import relay_pb2, relay_pb2_grpc

from tests.client.held_back import held_back

from .conftest import Peer

Open = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def open_peer(mesh: LocalMesh, tmp_path: Path) -> AsyncIterator[Open]:
    """``await open_peer(region, window=...)``: a registered device whose messages are read and acked
    (``path=``, ``replaces=``: reopens a closed peer's state)."""
    opened: list[Peer] = []

    async def make(
        region: str, *, window: float | None = None, path: Path | None = None, replaces: Peer | None = None
    ) -> Peer:
        if replaces is not None:  # closed first (its acks confirmed), then its state reopened
            opened.remove(replaces)
            await replaces.close()
        options: dict[str, Any] = {} if window is None else {"reorder_window_s": window}
        state = path or tmp_path / f"o{len(opened)}.db"
        client = await Client.open(state, mesh.endpoints(region), **options)
        try:
            if client._state.get_meta("identity") is None:
                await client.register(f"o{secrets.token_hex(4)}")
        except BaseException:
            await client.close()
            raise
        peer = Peer(client, ack=True)
        opened.append(peer)
        return peer

    yield make
    for peer in opened:
        await peer.close()


async def _publish(sender: Client, items: Sequence[OutboxItem]) -> None:
    """Stores each envelope through relay's unary ``Send``, in the given order, with the sender's token."""
    for item in items:
        request = relay_pb2.SendRequest(
            recipient_device_id=item.recipient_device, message_id=item.message_id, ciphertext=item.ciphertext
        )
        await sender._tokens.authed(
            lambda ch, t, md, request=request: relay_pb2_grpc.RelayStub(ch).Send(request, timeout=t, metadata=md),
            service="relay",
        )


def _texts(peer: Peer, sender: Peer) -> list[str]:
    return [m.text for m in peer.messages if m.sender_account == sender.account]


async def _conversation(open_peer: Open, *, window: float | None = None) -> tuple[Peer, Peer]:
    alice, bob = await open_peer("a"), await open_peer("b", window=window)
    await alice.client.send(bob.account, "hello")
    await bob.until(lambda: _texts(bob, alice) == ["hello"])
    return alice, bob


@pytest.mark.parametrize("order", [(2, 0, 1), (1, 2, 0), (2, 1, 0)])
async def test_envelopes_stored_out_of_order_reach_the_app_in_order_once(open_peer: Open, order: tuple[int, ...]) -> None:
    alice, bob = await _conversation(open_peer)
    texts = ["one", "two", "three"]
    items = await held_back(alice.client, bob.account, texts)
    await _publish(alice.client, [items[i] for i in order])
    await bob.until(lambda: len(_texts(bob, alice)) >= 4)
    await asyncio.sleep(1.0)  # nothing more comes
    assert _texts(bob, alice) == ["hello", *texts]


async def test_acks_of_reordered_messages_clear_them(open_peer: Open, tmp_path: Path) -> None:
    alice = await open_peer("a")
    bob = await open_peer("b", path=tmp_path / "bob.db")
    await alice.client.send(bob.account, "hello")
    await bob.until(lambda: _texts(bob, alice) == ["hello"])
    items = await held_back(alice.client, bob.account, ["one", "two", "three"])
    await _publish(alice.client, [items[2], items[0], items[1]])
    await bob.until(lambda: len(_texts(bob, alice)) == 4)
    again = await open_peer("b", path=tmp_path / "bob.db", replaces=bob)
    await again.client.backlog_done.wait()
    await asyncio.sleep(1.0)
    assert again.messages == []


async def test_a_predecessor_that_never_comes_delays_later_messages_only_the_window(open_peer: Open) -> None:
    window = 1.5
    alice, bob = await _conversation(open_peer, window=window)
    lost, second, third = await held_back(alice.client, bob.account, ["lost", "two", "three"])
    started = time.monotonic()
    await _publish(alice.client, [second, third])
    await asyncio.sleep(window / 3)
    assert _texts(bob, alice) == ["hello"]  # held: "lost" may still come
    await bob.until(lambda: len(_texts(bob, alice)) == 3)  # released by the timer, without new traffic
    assert time.monotonic() - started >= window * 0.9
    await asyncio.sleep(1.0)
    assert _texts(bob, alice) == ["hello", "two", "three"]
    gaps = bob.events_of(OrderGap)
    assert [(g.account, g.device, g.message_id, g.missing) for g in gaps] == [
        (alice.account, alice.client.device_id, m.message_id, 1) for m in (second, third)
    ]
    # The gap is given up: what follows is not held again.
    sent = time.monotonic()
    await alice.client.send(bob.account, "four")
    await bob.until(lambda: _texts(bob, alice)[-1:] == ["four"])
    assert time.monotonic() - sent < window
    del lost


async def test_a_sender_that_skips_far_ahead_delays_only_its_own_messages(open_peer: Open) -> None:
    window = 3.0
    mallory, bob = await _conversation(open_peer, window=window)
    carol = await open_peer("c")
    # Mallory advances its chain by thousands of messages it never sends.
    await held_back(mallory.client, bob.account, [f"never {i}" for i in range(3000)])
    started = time.monotonic()
    await mallory.client.send(bob.account, "after the skip")
    await carol.client.send(bob.account, "from carol")
    await bob.until(lambda: _texts(bob, carol) == ["from carol"])
    assert time.monotonic() - started < window  # another sender flows at once
    assert _texts(bob, mallory) == ["hello"]
    await bob.until(lambda: _texts(bob, mallory) == ["hello", "after the skip"])
    assert time.monotonic() - started >= window * 0.9
    # Bounded: once the gap is given up, mallory's next message is not held.
    sent = time.monotonic()
    await mallory.client.send(bob.account, "next")
    await bob.until(lambda: _texts(bob, mallory)[-1:] == ["next"])
    assert time.monotonic() - sent < window


async def test_many_senders_interleaved_out_of_order_each_arrive_in_their_order(open_peer: Open) -> None:
    bob = await open_peer("b")
    senders = [await open_peer(region) for region in ("a", "b", "c", "a")]
    batches = []
    for sender in senders:
        await sender.client.send(bob.account, "hello")
        batches.append(await held_back(sender.client, bob.account, [f"{i}" for i in range(20)]))
    await bob.until(lambda: all(_texts(bob, s) == ["hello"] for s in senders))
    # Each sender's envelopes stored back to front, all senders concurrently.
    await asyncio.gather(*(_publish(s.client, list(reversed(items))) for s, items in zip(senders, batches)))
    await bob.until(lambda: all(len(_texts(bob, s)) == 21 for s in senders), timeout=30)
    await asyncio.sleep(1.0)
    for sender in senders:
        assert _texts(bob, sender) == ["hello", *(f"{i}" for i in range(20))]


async def test_a_held_message_redelivered_by_a_new_sync_is_handed_over_once(open_peer: Open, mesh: LocalMesh) -> None:
    alice, bob = await _conversation(open_peer, window=60.0)
    first, second = await held_back(alice.client, bob.account, ["one", "two"])
    await _publish(alice.client, [second])
    await bob.until(lambda: bob.client._receiver._reorder.holds(second.message_id))
    # Bob's region restarts: its Sync reconnects and the backlog brings "two" (unacked) again.
    bob.client.backlog_done.clear()
    await asyncio.to_thread(mesh.restart_services, "b")
    await asyncio.wait_for(bob.client.backlog_done.wait(), 30)
    await asyncio.sleep(0.5)
    assert _texts(bob, alice) == ["hello"]
    await _publish(alice.client, [first])
    await bob.until(lambda: len(_texts(bob, alice)) >= 3)
    await asyncio.sleep(1.0)
    assert _texts(bob, alice) == ["hello", "one", "two"]
