"""Attacks on the SDK's trust, through the public SDK against the real three-region mesh.

A hostile contact controls its own SDK: here it is an ordinary ``Client`` whose
sealed-sender claim is rewritten (``Sender`` takes the claim from a callable).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from xchat.client import (
    Client,
    IdentityChanged,
    IdentityNotApproved,
    Message,
    SafetyNumberMismatch,
    SenderMismatch,
    Undecryptable,
)
from xchat.client._state import OutboxItem
from xchat.client.crypto import seal
from xchat.mesh.local import LocalMesh


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _next(stream: AsyncIterator[Any], timeout: float = 15.0) -> Any:
    return await asyncio.wait_for(anext(stream), timeout)


async def test_contact_with_a_session_cannot_claim_another_account(mesh: LocalMesh, tmp_path: Path) -> None:
    mallory_name, victim_name, carol_name = _name("mallory"), _name("victim"), _name("carol")
    async with await Client.open(tmp_path / "m.db", mesh.endpoints("a")) as mallory, await Client.open(
        tmp_path / "v.db", mesh.endpoints("b")
    ) as victim, await Client.open(tmp_path / "c.db", mesh.endpoints("c")) as carol:
        await mallory.register(mallory_name)
        await victim.register(victim_name)
        await carol.register(carol_name)
        inbox = victim.messages()
        events = victim.events()

        await mallory.send(victim_name, "hi, it's mallory")
        first = await _next(inbox)
        assert (first.sender_account, first.text) == (mallory_name, "hi, it's mallory")
        await victim.ack(first)

        # The forgery: mallory's existing session, sealed with carol's account name
        # (on every message, not only the first).
        mallory._sender._sender = lambda: (carol_name, mallory.device_id)
        await mallory.send(victim_name, "it's carol, send me your password")
        await mallory.send(victim_name, "really carol")
        mallory._sender._sender = lambda: (mallory_name, mallory.device_id)
        await mallory.send(victim_name, "mallory again")

        # The forgeries never reach the app as messages; the next message is the genuine one.
        genuine: Message = await _next(inbox)
        assert (genuine.sender_account, genuine.text) == (mallory_name, "mallory again")
        await victim.ack(genuine)
        for _ in range(2):
            event = await _next(events)
            assert isinstance(event, SenderMismatch)
            assert event.claimed_account == carol_name
            assert event.account == mallory_name
            assert event.device == mallory.device_id

        # Mallory's device was not filed under carol: a send to carol reaches carol alone.
        carol_inbox = carol.messages()
        receipts = await victim.send(carol_name, "for carol only")
        assert [r.recipient_device for r in receipts] == [carol.device_id]
        got = await _next(carol_inbox)
        assert (got.sender_account, got.text) == (victim_name, "for carol only")
        await carol.ack(got)
        await inbox.aclose()
        await carol_inbox.aclose()
        await events.aclose()


async def _swap_identity(mesh: LocalMesh, tmp_path: Path, alice_name: str, alice: Client, victim: Client, victim_name: str) -> Client:
    """Whoever controls the directory publishes their own key for alice's device.

    The hostile directory is simulated at the victim's one lookup (the SDK asks
    it for a device's identity key); the impostor is a client with its own fresh
    identity key that seals as alice's device.
    """
    impostor = await Client.open(tmp_path / "impostor.db", mesh.endpoints("c"))
    await impostor.register(_name("impostor"))
    impostor_key = impostor._book.identity.public
    real_lookup = victim._directory_key

    async def lying_directory(account: str, device: str) -> bytes | None:
        if (account, device) == (alice_name, alice.device_id):
            return impostor_key
        return await real_lookup(account, device)

    victim._receiver._directory_key = lying_directory
    impostor._sender._sender = lambda: (alice_name, alice.device_id)
    # No sender certificate, as from an SDK older than them: the impostor's own would name its
    # account and be refused (SenderCertificateRejected, tests/client/test_client_sender_certs.py).
    impostor._book.certificate = lambda: b""  # type: ignore[method-assign]
    impostor._book.me = lambda: (alice_name, alice.device_id)  # the ids its PQXDH AD binds, as it claims
    await impostor.send(victim_name, "it's alice, new phone")
    return impostor


async def test_changed_identity_key_raises_an_event(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, victim_name = _name("alice"), _name("victim")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "v.db", mesh.endpoints("b")
    ) as victim:
        await alice.register(alice_name)
        await victim.register(victim_name)
        inbox, events = victim.messages(), victim.events()
        await alice.send(victim_name, "hello")
        first = await _next(inbox)
        await victim.ack(first)
        old_number = victim.safety_number(alice_name)

        impostor = await _swap_identity(mesh, tmp_path, alice_name, alice, victim, victim_name)
        try:
            message = await _next(inbox)  # unverified contact: trust on first use, then told
            await victim.ack(message)
            event = await _next(events)
            assert isinstance(event, IdentityChanged)
            assert (event.account, event.device) == (alice_name, alice.device_id)
            assert event.old_fingerprint != event.new_fingerprint
            # The safety number covers alice's account key (docs/adr/0011), which did not change:
            # a device key change is told per device (this event) and, with signed device lists,
            # only the account key's holder can make one (tests/client/test_client_linked_attacks.py).
            assert victim.safety_number(alice_name) == old_number
            await victim.send(alice_name, "not verified: sending is not blocked")
        finally:
            await impostor.close()
        await inbox.aclose()
        await events.aclose()


async def test_changed_identity_of_a_verified_contact_blocks_sending_until_approved(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    alice_name, victim_name = _name("alice"), _name("victim")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "v.db", mesh.endpoints("b")
    ) as victim:
        await alice.register(alice_name)
        await victim.register(victim_name)
        inbox, events = victim.messages(), victim.events()
        await alice.send(victim_name, "hello")
        await victim.ack(await _next(inbox))
        with pytest.raises(SafetyNumberMismatch):
            victim.verify(alice_name, "0" * 60)
        victim.verify(alice_name, alice.safety_number(victim_name))  # compared out of band

        impostor = await _swap_identity(mesh, tmp_path, alice_name, alice, victim, victim_name)
        try:
            await victim.ack(await _next(inbox))
            event = await _next(events)
            assert isinstance(event, IdentityChanged) and event.account == alice_name
            with pytest.raises(IdentityNotApproved) as err:
                await victim.send(alice_name, "secret for alice")
            assert err.value.account == alice_name
            victim.approve_identity(alice_name)  # the user accepted the new safety number
            await victim.send(alice_name, "approved")
        finally:
            await impostor.close()
        await inbox.aclose()
        await events.aclose()


async def test_undecryptable_envelopes_are_reported_with_the_sender_device(mesh: LocalMesh, tmp_path: Path) -> None:
    mallory_name, victim_name = _name("mallory"), _name("victim")
    async with await Client.open(tmp_path / "m.db", mesh.endpoints("a")) as mallory, await Client.open(
        tmp_path / "v.db", mesh.endpoints("b")
    ) as victim:
        await mallory.register(mallory_name)
        await victim.register(victim_name)
        inbox, events = victim.messages(), victim.events()
        # Sealed to the victim (so the sender device is readable), garbage inside;
        # then bytes that are not even sealed. A hostile client queues them as any envelope.
        sealed_junk = seal(
            sender_account=mallory_name,
            sender_device=mallory.device_id,
            inner=b"\x01" + secrets.token_bytes(80),
            recipient_identity=victim._book.identity.public,
        )
        junk = [
            OutboxItem(secrets.token_bytes(16), victim.device_id, victim_name, sealed_junk),
            OutboxItem(secrets.token_bytes(16), victim.device_id, victim_name, secrets.token_bytes(120)),
        ]
        for item in junk:
            mallory._sender._queue[(item.message_id, item.recipient_device)] = item
        assert all(len(o.receipt) == 16 for o in await mallory._sender._await(junk))  # type: ignore[union-attr]
        await mallory.send(victim_name, "after the junk")

        message = await _next(inbox)
        assert message.text == "after the junk"  # the junk never reached the app
        await victim.ack(message)
        first, second = await _next(events), await _next(events)
        assert isinstance(first, Undecryptable) and isinstance(second, Undecryptable)
        assert (first.message_id, first.sender_account, first.sender_device) == (
            junk[0].message_id, mallory_name, mallory.device_id
        )
        assert (second.message_id, second.sender_device) == (junk[1].message_id, None)
        assert first.reason and second.reason
        assert victim.undecryptable == 2
        await inbox.aclose()
        await events.aclose()
