"""Edit and delete-for-everyone through the public SDK on the real three-region mesh (issue 14).

Encrypted control messages the SDK applies (``MessageEdited``, ``MessageDeleted``),
only for the original sender's own message and within 24 h of it; anything
else is refused (``EditRefused`` when sending, ``ControlRejected`` when received).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from xchat.client import (
    Client,
    ControlRejected,
    EditRefused,
    MessageDeleted,
    MessageEdited,
    SenderCertificateRejected,
    SenderMismatch,
)
from xchat.client._controls import EDIT_CONTENT_TYPE, encode_edit
from xchat.mesh.local import LocalMesh

Peer = Any  # tests/client/conftest.py's Peer
Peers = Callable[..., Awaitable[Peer]]
DAY_MS = 24 * 3600 * 1000


def _age(client: Client, message_id: bytes, by_ms: int) -> None:
    """Makes the ledger say ``message_id`` was sent ``by_ms`` earlier (a test's stand-in for a day passing)."""
    with client._state.transaction():
        client._state.db.execute(
            "UPDATE conversation_messages SET sent_at_ms = sent_at_ms - ? WHERE message_id = ?", (by_ms, message_id)
        )


async def test_an_edit_and_a_delete_reach_the_other_side(peers: Peers) -> None:
    alice, bob = await peers("a"), await peers("c")
    message_id = (await alice.client.send(bob.account, "see you at 8"))[0].message_id
    await bob.message("see you at 8")

    await alice.client.edit(message_id, "see you at 9")
    edited = await bob.event(MessageEdited)
    assert (edited.message_id, edited.conversation, edited.sender_account, edited.text) == (
        message_id, alice.account, alice.account, "see you at 9"
    )
    await alice.client.delete_for_everyone(message_id)
    deleted = await bob.event(MessageDeleted)
    assert (deleted.message_id, deleted.conversation, deleted.sender_account) == (message_id, alice.account, alice.account)
    # Deleted: no further edit, from the SDK.
    with pytest.raises(EditRefused):
        await alice.client.edit(message_id, "again")
    assert [m.text for m in bob.messages] == ["see you at 8"]
    assert not bob.events_of(ControlRejected)


async def test_a_message_deleted_before_it_was_shown_never_reaches_messages(
    peers: Peers, mesh: LocalMesh, tmp_path: Path
) -> None:
    alice = await peers("a")
    bob = await Client.open(tmp_path / "bob.db", mesh.endpoints("b"))
    try:
        await bob.register(f"bob{int(time.time() * 1000)}")
        message_id = (await alice.client.send(bob.account, "oops, wrong chat"))[0].message_id
        await alice.client.delete_for_everyone(message_id)
        await alice.client.send(bob.account, "hello")
        events = bob.events()
        shown = []
        async for message in bob.messages():
            await bob.ack(message)
            shown.append(message.text)
            if message.text == "hello":
                break
        assert shown == ["hello"]
        while not isinstance(event := await anext(events), MessageDeleted):
            pass
        assert event.message_id == message_id
        await events.aclose()
    finally:
        await bob.close()


async def test_only_the_sender_may_edit_or_delete_its_message(peers: Peers) -> None:
    alice, bob, mallory = await peers("a"), await peers("b"), await peers("c")
    to_bob = (await alice.client.send(bob.account, "alice's words"))[0].message_id
    await bob.message("alice's words")
    await mallory.client.send(bob.account, "hi bob")
    await bob.message("hi bob")

    # Bob's SDK will not edit alice's message; a hostile bob sends the control himself.
    with pytest.raises(EditRefused):
        await bob.client.edit(to_bob, "bob's words")
    await bob.client._send_control(alice.account, EDIT_CONTENT_TYPE, encode_edit(alice.account, to_bob, b"bob's words"))
    refused = await alice.event(ControlRejected)
    assert (refused.account, refused.kind) == (bob.account, "edit")
    # Mallory, in her own conversation with bob, names alice's message.
    await mallory.client._send_control(bob.account, EDIT_CONTENT_TYPE, encode_edit(bob.account, to_bob, b"mallory's words"))
    refused = await bob.event(ControlRejected, lambda e: e.account == mallory.account)
    assert refused.kind == "edit"
    # Mallory relabels herself as alice: her sender certificate names her account (and her session
    # binds her device to it), so bob refuses the envelope before any control is applied.
    mallory.client._sender._sender = lambda: (alice.account, mallory.client.device_id)
    await mallory.client._send_control(bob.account, EDIT_CONTENT_TYPE, encode_edit(bob.account, to_bob, b"as alice"))
    refused_envelope = await bob.event((SenderCertificateRejected, SenderMismatch))
    if isinstance(refused_envelope, SenderCertificateRejected):
        assert (refused_envelope.sender_account, refused_envelope.problem) == (alice.account, "account")
    else:
        assert (refused_envelope.account, refused_envelope.claimed_account) == (mallory.account, alice.account)

    await alice.client.send(bob.account, "still alice")
    await bob.message("still alice")
    assert bob.events_of(MessageEdited) == [] and alice.events_of(MessageEdited) == []


async def test_edits_outside_the_window_are_refused_by_both_sides(peers: Peers) -> None:
    alice, bob = await peers("a"), await peers("b")
    message_id = (await alice.client.send(bob.account, "yesterday's news"))[0].message_id
    await bob.message("yesterday's news")
    _age(alice.client, message_id, DAY_MS + 60_000)
    with pytest.raises(EditRefused, match="24 h"):
        await alice.client.edit(message_id, "today's news")
    with pytest.raises(EditRefused):
        await alice.client.delete_for_everyone(message_id)
    # A hostile alice bypasses her SDK: bob's checks the window against the original's time.
    _age(bob.client, message_id, DAY_MS + 60_000)
    await alice.client._send_control(bob.account, EDIT_CONTENT_TYPE, encode_edit(bob.account, message_id, b"today's news"))
    refused = await bob.event(ControlRejected)
    assert (refused.account, refused.kind, refused.reason) == (alice.account, "edit", "outside the edit window")
    assert bob.events_of(MessageEdited) == []
