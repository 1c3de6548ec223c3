"""The SDK against the real three-region mesh: register → keys → session → send → receive → ack."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from xchat.client import Client, Message, RequestRejected
from xchat.mesh.local import LocalMesh


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _next(messages, timeout: float = 15.0) -> Message:
    return await asyncio.wait_for(anext(messages), timeout)


async def test_online_recipient_in_another_region(mesh: LocalMesh, tmp_path: Path) -> None:
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("c")
    ) as bob:
        alice_name, bob_name = _name("alice"), _name("bob")
        await alice.register(alice_name)
        await bob.register(bob_name)
        inbox = bob.messages()
        receive = asyncio.create_task(_next(inbox))
        receipts = await alice.send(bob_name, "hello from region a")
        assert len(receipts) == 1 and len(receipts[0].receipt) == 16
        message = await receive
        assert message.text == "hello from region a"
        assert message.sender_account == alice_name
        assert message.counter == 1
        await bob.ack(message)

        # The reply goes back over the same session (no prekey fetch).
        alice_inbox = alice.messages()
        got = asyncio.create_task(_next(alice_inbox))
        await bob.send(alice_name, "hi alice")
        assert (await got).text == "hi alice"
        assert alice.safety_number(bob_name) == bob.safety_number(alice_name)
        await inbox.aclose()
        await alice_inbox.aclose()


async def test_offline_recipient_gets_backlog_in_order(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "bob.db", mesh.endpoints("b")) as bob:
        await bob.register(bob_name)
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice:
        await alice.register(alice_name)
        for i in range(5):
            await alice.send(bob_name, f"m{i}")
    async with await Client.open(tmp_path / "bob.db", mesh.endpoints("c")) as bob:
        inbox = bob.messages()
        texts = []
        for _ in range(5):
            message = await _next(inbox)
            texts.append(message.text)
            await bob.ack(message)
        assert texts == [f"m{i}" for i in range(5)]
        await inbox.aclose()


async def test_unacked_message_is_redelivered_and_acked_one_never_again(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        await alice.send(bob_name, "first")
        inbox = bob.messages()
        first = await _next(inbox)
        await inbox.aclose()  # disconnect without acking

    async with await Client.open(tmp_path / "bob.db", mesh.endpoints("b")) as bob:
        inbox = bob.messages()
        again = await _next(inbox)
        assert again.message_id == first.message_id and again.text == "first"
        await bob.ack(again)
        await asyncio.sleep(0.5)  # the ack frame reaches the server
        await inbox.aclose()

    async with await Client.open(tmp_path / "bob.db", mesh.endpoints("c")) as bob:
        inbox = bob.messages()
        receive = asyncio.create_task(_next(inbox, timeout=3.0))
        with pytest.raises(asyncio.TimeoutError):
            await receive
        await inbox.aclose()


async def test_streaming_send_path(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        outcomes = await alice.send_many([(bob_name, f"s{i}") for i in range(200)])
        assert all(len(o.receipt) == 16 for o in outcomes)  # type: ignore[union-attr]
        inbox = bob.messages()
        got = []
        while len(got) < 200:
            message = await _next(inbox)
            got.append(message.counter)
            await bob.ack(message)
        assert sorted(got) == list(range(1, 201))
        await inbox.aclose()


async def test_send_to_unknown_account_is_rejected(mesh: LocalMesh, tmp_path: Path) -> None:
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice:
        await alice.register(_name("alice"))
        with pytest.raises(RequestRejected) as err:
            await alice.send("nobody-here", "x")
        assert err.value.code == "NOT_FOUND"


async def test_one_time_prekeys_are_topped_up_when_low(mesh: LocalMesh, tmp_path: Path) -> None:
    bob_name = _name("bob")
    async with await Client.open(tmp_path / "bob.db", mesh.endpoints("b")) as bob:
        await bob.register(bob_name, one_time_prekeys=10)
        senders = []
        for i in range(2):
            sender = await Client.open(tmp_path / f"s{i}.db", mesh.endpoints("a"))
            senders.append(sender)
            await sender.register(_name(f"s{i}-"))
            await sender.send(bob_name, "new session")
        assert (await bob.prekeys_left())[0] == 8
        inbox = bob.messages()
        for _ in range(2):
            await bob.ack(await _next(inbox))
        for _ in range(50):
            if (await bob.prekeys_left())[0] == 50:
                break
            await asyncio.sleep(0.1)
        assert await bob.prekeys_left() == (50, 18), "classical topped up; PQ still above the low-water mark"
        await inbox.aclose()
        for sender in senders:
            await sender.close()
