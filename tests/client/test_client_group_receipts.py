"""Receipts, disappearing timers and attachments in groups, through the public SDK on the real
three-region mesh (issue 14; docs/adr/0016, addendum).

Receipts for a group message go pairwise to its sender only (one id per member account: a
member's receipt counts only for the id sent to that member); the group's read-receipt setting
on a device is honoured. The disappearing timer is a field of the group's encrypted state: any
member sets it, every member device applies it, deletes each group message when due, and the
envelopes carry it as relay's TTL. A non-member's (or a removed member's) timer change and a
receipt naming someone else's id are refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from xchat.client import Client, ControlRejected, GroupChanged, GroupError, GroupRefused, MessageExpired, MessagesDelivered, MessagesRead
from xchat.client import _group_state as rules
from xchat.client._controls import DELIVERED, READ, RECEIPT_CONTENT_TYPE, encode_receipt
from xchat.client._group_state import GROUP_STATE_TYPE
from xchat.client.messages import SendReceipt
from xchat.mesh.local import LocalMesh

from tests.client.mailbox_records import stored_headers


Peer = Any  # tests/client/conftest.py's Peer
# Long enough that a loaded machine delivers to every member before the servers' copy expires.
TIMER_S = 8
Peers = Callable[..., Awaitable[Peer]]


def _id_for(outcomes: list[Any], device: str) -> bytes:
    """The pairwise message id a group send used for ``device``'s account."""
    return next(o.message_id for o in outcomes if isinstance(o, SendReceipt) and o.recipient_device == device)


def _covered(peer: Peer, kind: type, account: str, group_id: str | None) -> set[bytes]:
    return {m for e in peer.events_of(kind) if e.account == account and e.group_id == group_id for m in e.message_ids}


async def _group(alice: Peer, *others: Peer) -> str:
    group_id: str = await alice.client.create_group("club", [p.account for p in others])
    for peer in others:
        await peer.until(lambda peer=peer: peer.client.group(group_id) is not None)
    return group_id




async def test_group_receipts_go_to_the_sender_only_and_honour_the_groups_read_setting(peers: Peers) -> None:
    alice, bob, carol = await peers("a"), await peers("b"), await peers("c")
    group_id = await _group(alice, bob, carol)
    outcomes = await alice.client.send_group(group_id, "hello club")
    to_bob, to_carol = _id_for(outcomes, bob.client.device_id), _id_for(outcomes, carol.client.device_id)
    assert to_bob != to_carol  # one pairwise id per member account
    for peer in (bob, carol):
        shown = await peer.message("hello club")
        assert shown.group_id == group_id

    # Delivered, on their own, from each member for the id sent to that member, saying which group.
    await alice.until(lambda: to_bob in _covered(alice, MessagesDelivered, bob.account, group_id))
    await alice.until(lambda: to_carol in _covered(alice, MessagesDelivered, carol.account, group_id))

    # Read: bob's goes to alice; carol turned read receipts off for this group, so hers is not sent.
    carol.client.set_group_read_receipts(group_id, False)
    assert carol.client.group_settings(group_id).read_receipts is False
    assert carol.client.conversation_settings(alice.account).read_receipts is True  # the one-to-one chat is apart
    await bob.client.mark_read(*[m for m in bob.messages if m.group_id == group_id])
    await carol.client.mark_read(*[m for m in carol.messages if m.group_id == group_id])
    read = await alice.event(MessagesRead)
    assert (read.account, read.group_id, read.message_ids) == (bob.account, group_id, (to_bob,))
    await carol.client.send_group(group_id, "carol after")  # pairwise order: a read receipt would be before it
    await alice.message("carol after")
    assert not [e for e in alice.events_of(MessagesRead) if e.account == carol.account]

    # Only the sender hears about its message: bob and carol got no receipts for alice's message,
    # and nobody's app saw a receipt as a message or anything refused.
    assert not [e for e in bob.events_of(MessagesDelivered) if to_carol in e.message_ids]
    assert [m.text for m in alice.messages] == ["carol after"]
    assert not any(p.events_of(ControlRejected) for p in (alice, bob, carol))


async def test_a_forged_group_receipt_is_refused(peers: Peers) -> None:
    """Eve (no member) and mallory (a member) name the id alice's group message had for bob
    (leaked, say): alice's SDK counts a receipt only for the id sent to its sender's account."""
    alice, bob, mallory, eve = await peers("a"), await peers("b"), await peers("c"), await peers("b")
    bob.client._conversations._send_control = _noop  # bob's genuine receipts held back: only forgeries arrive
    group_id = await _group(alice, bob, mallory)
    outcomes = await alice.client.send_group(group_id, "for the club")
    to_bob = _id_for(outcomes, bob.client.device_id)
    await bob.message("for the club")
    await eve.client.send(alice.account, "hi alice")  # an ordinary contact of alice's
    await alice.message("hi alice")

    for forger in (eve, mallory):
        for kind in (DELIVERED, READ):
            await forger.client._send_control(alice.account, RECEIPT_CONTENT_TYPE, encode_receipt(kind, [to_bob]))
        refused = await alice.until(lambda f=forger: len([e for e in alice.events_of(ControlRejected) if e.account == f.account]) >= 2)
        assert refused
    assert not [e for e in alice.events_of(MessagesDelivered) + alice.events_of(MessagesRead) if to_bob in e.message_ids]
    assert all(e.kind == "receipt" for e in alice.events_of(ControlRejected))


async def _noop(*_: object) -> None:
    return None


async def test_a_group_timer_set_by_any_member_is_honoured_by_every_member_device(
    peers: Peers, mesh: LocalMesh, tmp_path: Path
) -> None:
    alice, bob, carol = await peers("a"), await peers("b"), await peers("c", ack=False)  # carol never acks
    code = await alice.client.link_device()
    alice2 = type(alice)(await Client.open_linked(code, tmp_path / "alice2.db", mesh.endpoints("b")), ack=True)
    try:
        await bob.client.send(alice.account, "hello both")  # bob learns alice's two devices
        await alice2.message("hello both")
        group_id = await _group(alice, bob, carol)
        await alice2.until(lambda: alice2.client.group(group_id) is not None)

        # Bob, a member who did not create it, sets the timer: every device of every member applies it.
        changed = await bob.client.set_group_disappearing(group_id, TIMER_S)
        assert changed.disappearing_s == TIMER_S
        for peer in (alice, alice2, carol):
            event = await peer.event(GroupChanged, lambda e: e.disappearing_s == TIMER_S)
            assert event.changed_by == bob.account
            assert peer.client.group(group_id).disappearing_s == TIMER_S  # type: ignore[union-attr]
            assert peer.client.group_settings(group_id).disappearing_s == TIMER_S

        marker = f"vanishing {secrets.token_hex(8)}"
        outcomes = await alice.client.send_group(group_id, marker)
        to_carol = _id_for(outcomes, carol.client.device_id)
        stored = await stored_headers(mesh, carol.client.device_id)
        if to_carol in stored:  # (already expired on a very slow machine)
            assert stored[to_carol].get("Nats-TTL") == f"{TIMER_S}s"  # the server's copy expires with the timer
        for peer in (bob, carol, alice2):
            shown = await peer.message(marker)
            assert shown.group_id == group_id and shown.expires_at_ms is not None
            assert shown.expires_at_ms <= int(time.time() * 1000) + TIMER_S * 1000 + 500

        # Due: every member device deletes it and says so, the sender once per member account.
        for peer in (bob, carol, alice2):
            expired = await peer.event(MessageExpired, lambda e: e.group_id == group_id)
            assert expired.conversation == group_id
        await alice.until(lambda: {e.message_id for e in alice.events_of(MessageExpired)} >= {to_carol})

        async def server_copy_gone() -> bool:
            return to_carol not in await stored_headers(mesh, carol.client.device_id)

        deadline = time.monotonic() + 20
        while not await server_copy_gone():  # carol never acknowledged it
            assert time.monotonic() < deadline, "the server's copy outlived the group's timer"
            await asyncio.sleep(0.2)
        db = sqlite3.connect(f"file:{tmp_path / 'p2.db'}?mode=ro", uri=True)  # carol's state file
        try:
            assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0
            assert db.execute("SELECT count(*) FROM meta WHERE key LIKE 'group_read:%'").fetchone()[0] == 0
        finally:
            db.close()

        # Off again, by another member.
        await carol.client.set_group_disappearing(group_id, 0)
        await alice.until(lambda: alice.client.group(group_id).disappearing_s == 0)  # type: ignore[union-attr]
    finally:
        await alice2.close()


async def test_a_timer_change_from_outside_the_group_is_refused(peers: Peers) -> None:
    """Eve is no member and carol was removed: each sends a group state with a one-second timer
    (a higher version, the group's own id and members), straight over the pairwise sessions.
    Bob's devices refuse both (``GroupRefused`` "not_a_member") and keep the members' timer."""
    alice, bob, carol, eve = await peers("a"), await peers("b"), await peers("c"), await peers("a")
    bob.client._groups.hold_s = 0.0  # refuse at once instead of waiting for a late addition
    group_id = await _group(alice, bob, carol)
    await alice.client.set_group_disappearing(group_id, 3600)
    await bob.until(lambda: bob.client.group(group_id).disappearing_s == 3600)  # type: ignore[union-attr]
    await alice.client.remove_members(group_id, [carol.account])
    await bob.until(lambda: carol.account not in bob.client.group(group_id).members)  # type: ignore[union-attr]
    await carol.until(lambda: not carol.client.group(group_id).active)  # type: ignore[union-attr]

    held = bob.client.group(group_id)
    assert held is not None
    for attacker in (eve, carol):
        forged = rules.encode(
            type(held)(group_id, held.name, held.version + 10, (*held.members, attacker.account), disappearing_s=1)
        )
        await attacker.client._sender.send_many([(bob.account, forged)], GROUP_STATE_TYPE)
        refused = await bob.event(GroupRefused, lambda e, a=attacker: e.account == a.account)
        assert refused.reason == "not_a_member"
    after = bob.client.group(group_id)
    assert after is not None and after.disappearing_s == 3600 and after.version == held.version


async def test_an_attachment_in_a_group_reaches_every_member(peers: Peers, tmp_path: Path) -> None:
    alice, bob, carol = await peers("a"), await peers("b"), await peers("c")
    group_id = await _group(alice, bob, carol)
    source = tmp_path / "plan.bin"
    source.write_bytes(os.urandom(300 * 1024))
    outcomes = await alice.client.send_group_attachment(group_id, source, content_type="application/x-plan")
    assert all(isinstance(o, SendReceipt) for o in outcomes)
    for peer in (bob, carol):
        message = await peer.until(lambda p=peer: next((m for m in p.messages if m.group_id == group_id), None))
        found = peer.client.attachment(message)
        assert found is not None and found.name == "plan.bin" and found.content_type == "application/x-plan"
        dest = await peer.client.download_attachment(message, tmp_path / f"{peer.account}.bin")
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()
    # Not a member: refused before anything is uploaded.
    outsider = await peers("a")
    with pytest.raises(GroupError, match="not in group"):
        await outsider.client.send_group_attachment(group_id, source)
