"""Delivered and read receipts through the public SDK on the real three-region mesh (issue 14).

Receipts are end-to-end encrypted control messages (``_controls``): delivered
ones go on their own once a message is durably received, batched per sender
account; read ones on ``mark_read``, unless read receipts are off for the
conversation. They never reach ``messages()``; a receipt for a message that was
not sent to the receipt's sender is refused (``ControlRejected``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from xchat.client import ControlRejected, MessagesDelivered, MessagesRead
from xchat.client._controls import DELIVERED, RECEIPT_CONTENT_TYPE, encode_receipt

Peer = Any  # tests/client/conftest.py's Peer: a client whose messages and events are read in the background
Peers = Callable[..., Awaitable[Peer]]


def _covered(peer: Peer, kind: type, account: str) -> set[bytes]:
    return {m for e in peer.events_of(kind) if e.account == account for m in e.message_ids}


async def test_delivered_receipts_come_on_their_own_and_read_receipts_on_mark_read(peers: Peers) -> None:
    alice, bob = await peers("a"), await peers("c")
    sent = [(await alice.client.send(bob.account, f"hello {i}"))[0].message_id for i in range(5)]
    for i in range(5):
        await bob.message(f"hello {i}")

    # Delivered: every id covered, by bob's device, in fewer receipts than messages when they came together.
    await alice.until(lambda: _covered(alice, MessagesDelivered, bob.account) >= set(sent))
    delivered = alice.events_of(MessagesDelivered)
    assert {e.device for e in delivered} == {bob.client.device_id}
    assert len(delivered) <= 5

    # Read: one receipt for all that were marked together.
    await bob.client.mark_read(*bob.messages[:3])
    read = await alice.event(MessagesRead)
    assert (read.account, read.device, set(read.message_ids)) == (bob.account, bob.client.device_id, set(sent[:3]))

    # Receipts are never messages: alice's app saw none of them.
    assert alice.messages == []
    assert not alice.events_of(ControlRejected)


async def test_read_receipts_off_neither_sends_nor_reports_them(peers: Peers) -> None:
    alice, bob = await peers("a"), await peers("b")
    first = (await alice.client.send(bob.account, "one"))[0].message_id
    await bob.message("one")

    bob.client.set_read_receipts(alice.account, False)
    assert bob.client.conversation_settings(alice.account).read_receipts is False
    await bob.client.mark_read(*bob.messages)
    # Order is kept per pair of devices: once "after" is here, a read receipt sent before it was applied.
    await bob.client.send(alice.account, "after")
    await alice.message("after")
    assert first not in _covered(alice, MessagesRead, bob.account)

    # Alice turns them off on her side: bob's read receipts are not reported to her app.
    bob.client.set_read_receipts(alice.account, True)
    alice.client.set_read_receipts(bob.account, False)
    await bob.client.mark_read(*bob.messages)
    await bob.client.send(alice.account, "after again")
    await alice.message("after again")
    assert alice.events_of(MessagesRead) == []
    await alice.until(lambda: first in _covered(alice, MessagesDelivered, bob.account))  # delivered ones still come


async def test_a_forged_receipt_for_a_message_sent_to_someone_else_is_refused(peers: Peers) -> None:
    """Mallory knows (say, from a leak) the id of alice's message to bob and claims to have read it:
    alice's SDK accepts receipts only from the account the message was sent to."""
    alice, bob, mallory = await peers("a"), await peers("b"), await peers("c")
    to_bob = (await alice.client.send(bob.account, "for bob only"))[0].message_id
    await mallory.client.send(alice.account, "hi alice")  # an ordinary contact
    await alice.message("hi alice")

    forged = encode_receipt(DELIVERED, [to_bob])
    await mallory.client._send_control(alice.account, RECEIPT_CONTENT_TYPE, forged)
    rejected = await alice.event(ControlRejected, lambda e: e.account == mallory.account)
    assert (rejected.kind, rejected.device) == ("receipt", mallory.client.device_id)
    assert to_bob not in _covered(alice, MessagesDelivered, mallory.account)
    # Bob's genuine receipt still counts.
    await alice.until(lambda: to_bob in _covered(alice, MessagesDelivered, bob.account))


async def test_malformed_control_bodies_are_refused_and_store_nothing(peers: Peers, tmp_path: Path) -> None:
    alice, mallory = await peers("a"), await peers("b")
    await mallory.client.send(alice.account, "first")
    await alice.message("first")
    bodies = {
        "application/x-xchat-receipt": [b"", b"\x01\x01\x00", b"\x01\x03\x01" + bytes(16), b"\x01\x01\x01" + bytes(15)],
        "application/x-xchat-timer": [b"\x01\x00", b"\x01\x05alice" + bytes(3), b"\x02"],
        "application/x-xchat-edit": [b"\x01\x40", b"\x01\x01" + b"\x00" + bytes(16)],
        "application/x-xchat-delete": [b"\x01\x03bob" + bytes(10), b"\x01\x03bob" + bytes(17)],
    }
    for content_type, cases in bodies.items():
        for body in cases:
            await mallory.client._send_control(alice.account, content_type, body)
    await mallory.client.send(alice.account, "last")
    await alice.message("last")

    refused = [e for e in alice.events_of(ControlRejected) if e.account == mallory.account]
    assert len(refused) == sum(len(c) for c in bodies.values())
    assert all(e.reason.startswith("malformed") for e in refused)
    assert [m.text for m in alice.messages] == ["first", "last"]
    # Nothing of them stored: the inbox holds no row and the ledger only the two messages.
    db = sqlite3.connect(f"file:{tmp_path / 'p0.db'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM conversation_messages").fetchone()[0] == 2
    finally:
        db.close()



async def test_delivered_receipts_off_app_wide_neither_sends_nor_reports_them(peers: Peers) -> None:
    """Bob turns delivered receipts off (one setting for every conversation and group on his
    device): alice hears none from him, one-to-one or in a group, and bob's app is told of none of
    alice's. On again, they flow again."""
    alice, bob = await peers("a"), await peers("c")
    bob.client.set_delivered_receipts(False)
    assert bob.client.delivered_receipts is False and alice.client.delivered_receipts is True
    group_id = await alice.client.create_group("pair", [bob.account])
    one = (await alice.client.send(bob.account, "one"))[0].message_id
    in_group = {o.message_id for o in await alice.client.send_group(group_id, "in the group")}
    await bob.message("one")
    await bob.message("in the group")
    # A receipt goes 0.2 s after a delivery, and before anything bob sends later (pairwise order).
    await asyncio.sleep(1.0)
    await bob.client.send(alice.account, "barrier")
    await alice.message("barrier")
    assert alice.events_of(MessagesDelivered) == []
    # Alice's receipt for "barrier" reaches bob's device before her next message: not reported.
    await asyncio.sleep(1.0)
    await alice.client.send(bob.account, "after")
    await bob.message("after")
    assert bob.events_of(MessagesDelivered) == []

    bob.client.set_delivered_receipts(True)
    again = (await alice.client.send(bob.account, "again"))[0].message_id
    await bob.message("again")
    await alice.until(lambda: again in _covered(alice, MessagesDelivered, bob.account))
    assert not (_covered(alice, MessagesDelivered, bob.account) & ({one} | in_group))
