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

from xchat.client import Client, Message, SenderMismatch
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
