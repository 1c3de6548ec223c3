"""Linked devices through the public SDK on the real three-region mesh (issue 9, docs/adr/0011).

One account identity over several devices: ``link_device`` on an existing
device, ``open_linked`` on the new one, one safety number per pair of
accounts however many devices each has, every device reached.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from xchat.client import Client, LinkFailed, Message
from xchat.mesh.local import LocalMesh


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _next(stream: AsyncIterator[Any], timeout: float = 20.0) -> Any:
    return await asyncio.wait_for(anext(stream), timeout)


async def _linked(first: Client, path: Path, mesh: LocalMesh, region: str) -> Client:
    code = await first.link_device()
    return await Client.open_linked(code, path, mesh.endpoints(region))


async def _receive(client: Client, stream: AsyncIterator[Message]) -> Message:
    message: Message = await _next(stream)
    await client.ack(message)
    return message


async def test_three_linked_devices_and_a_contact_with_two_share_one_safety_number(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    alice1 = await Client.open(tmp_path / "a1.db", mesh.endpoints("a"))
    bob1 = await Client.open(tmp_path / "b1.db", mesh.endpoints("c"))
    opened = [alice1, bob1]
    try:
        await alice1.register(alice_name)
        await bob1.register(bob_name)
        alice2 = await _linked(alice1, tmp_path / "a2.db", mesh, "b")
        opened.append(alice2)
        alice3 = await _linked(alice2, tmp_path / "a3.db", mesh, "c")  # any linked device can link
        opened.append(alice3)
        bob2 = await _linked(bob1, tmp_path / "b2.db", mesh, "a")
        opened.append(bob2)
        assert {c.account for c in (alice1, alice2, alice3)} == {alice_name}
        assert len({c.device_id for c in (alice1, alice2, alice3)}) == 3

        listed = await alice3.devices()
        assert {d.device_id for d in listed} == {alice1.device_id, alice2.device_id, alice3.device_id}
        assert [d.device_id for d in listed if d.this_device] == [alice3.device_id]

        # Bob writes to alice: each of her three devices reads it, and bob's other device
        # sees it as sent by him (sent-message sync).
        streams = {c: c.messages() for c in (alice1, alice2, alice3, bob1, bob2)}
        receipts = await bob1.send(alice_name, "hello all of alice")
        assert {r.recipient_device for r in receipts} == {alice1.device_id, alice2.device_id, alice3.device_id}
        for device in (alice1, alice2, alice3):
            got = await _receive(device, streams[device])
            assert (got.sender_account, got.sender_device, got.text) == (bob_name, bob1.device_id, "hello all of alice")
            assert got.sent_to is None
        copy = await _receive(bob2, streams[bob2])
        assert (copy.sender_account, copy.sender_device, copy.sent_to, copy.text) == (
            bob_name, bob1.device_id, alice_name, "hello all of alice"
        )
        assert copy.content_type == "text/plain"

        # Alice's third device answers: both of bob's devices read it, alice's other two see it as sent.
        receipts = await alice3.send(bob_name, "hi bob")
        assert {r.recipient_device for r in receipts} == {bob1.device_id, bob2.device_id}
        for device in (bob1, bob2):
            got = await _receive(device, streams[device])
            assert (got.sender_account, got.text, got.sent_to) == (alice_name, "hi bob", None)
        for device in (alice1, alice2):
            copy = await _receive(device, streams[device])
            assert (copy.sender_device, copy.sent_to, copy.text) == (alice3.device_id, bob_name, "hi bob")

        # One safety number, the same on every device of both accounts, each way.
        numbers = {c.safety_number(bob_name) for c in (alice1, alice2, alice3)}
        numbers |= {c.safety_number(alice_name) for c in (bob1, bob2)}
        assert len(numbers) == 1 and len(numbers.pop()) == 60
        bob2.verify(alice_name, alice1.safety_number(bob_name))
    finally:
        for client in opened:
            await client.close()


async def test_a_link_code_works_once_and_a_wrong_one_opens_nothing(mesh: LocalMesh, tmp_path: Path) -> None:
    owner = await Client.open(tmp_path / "o.db", mesh.endpoints("a"))
    try:
        await owner.register(_name("owner"))
        code = await owner.link_device()
        # A code whose secret was changed: the ciphertext does not open (and is used up).
        tampered = code[:-4] + ("AAAA" if not code.endswith("AAAA") else "BBBB")
        with pytest.raises(LinkFailed):
            await Client.open_linked(tampered, tmp_path / "t.db", mesh.endpoints("b"))
        with pytest.raises(LinkFailed):
            await Client.open_linked(code, tmp_path / "late.db", mesh.endpoints("b"))
        with pytest.raises(LinkFailed):
            await Client.open_linked("not a code", tmp_path / "junk.db", mesh.endpoints("b"))

        fresh = await owner.link_device()
        linked = await Client.open_linked(fresh, tmp_path / "n.db", mesh.endpoints("c"))
        try:
            with pytest.raises(LinkFailed):  # single use, from any region
                await Client.open_linked(fresh, tmp_path / "again.db", mesh.endpoints("a"))
            assert linked.account == owner.account
        finally:
            await linked.close()
    finally:
        await owner.close()


async def test_revoke_device_removes_it_from_the_signed_list(mesh: LocalMesh, tmp_path: Path) -> None:
    owner = await Client.open(tmp_path / "o.db", mesh.endpoints("a"))
    try:
        await owner.register(_name("owner"))
        linked = await _linked(owner, tmp_path / "l.db", mesh, "b")
        gone = linked.device_id
        await linked.close()
        await owner.revoke_device(gone)
        assert [d.device_id for d in await owner.devices()] == [owner.device_id]
    finally:
        await owner.close()


async def test_a_contacts_device_linked_later_is_reached_after_the_list_refresh(
    mesh: LocalMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xchat.client._fanout as fanout

    monkeypatch.setattr(fanout, "LIST_REFRESH_S", 0.2)  # a minute by default
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        assert [r.recipient_device for r in await bob.send(alice_name, "one")] == [alice.device_id]
        alice2 = await _linked(alice, tmp_path / "a2.db", mesh, "c")
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # the pinned list is refreshed in the background; later sends include the new device
                await asyncio.sleep(0.3)
                reached = {r.recipient_device for r in await bob.send(alice_name, "again")}
                if alice2.device_id in reached or asyncio.get_running_loop().time() > deadline:
                    break
            assert reached == {alice.device_id, alice2.device_id}
            inbox = alice2.messages()
            got = await _receive(alice2, inbox)
            assert (got.sender_account, got.text) == (bob_name, "again")
        finally:
            await alice2.close()


async def test_a_first_message_from_a_pinned_device_asks_the_directory_nothing(mesh: LocalMesh, tmp_path: Path) -> None:
    """Sealed sender: a directory lookup right after a first message would tell auth who wrote to us."""
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        alice2 = await _linked(alice, tmp_path / "a2.db", mesh, "c")
        try:
            await bob.send(alice_name, "hi")  # bob verifies and pins alice's list (both devices)
            lookups: list[str] = []
            real_fetch = bob._devices.fetch

            async def counting_fetch(account: str) -> Any:
                lookups.append(account)
                return await real_fetch(account)

            bob._devices.fetch = counting_fetch  # type: ignore[method-assign]
            await alice2.send(bob_name, "first message from my second device")  # a new session at bob
            inbox = bob.messages()
            got = await _receive(bob, inbox)
            assert (got.sender_device, got.text) == (alice2.device_id, "first message from my second device")
            assert lookups == []
        finally:
            await alice2.close()


async def test_two_devices_linking_at_once_both_land_in_the_list(mesh: LocalMesh, tmp_path: Path) -> None:
    owner = await Client.open(tmp_path / "o.db", mesh.endpoints("a"))
    opened = [owner]
    try:
        await owner.register(_name("owner"))
        second = await _linked(owner, tmp_path / "s.db", mesh, "b")
        opened.append(second)
        # Both sign version 3 at the same moment; auth keeps one, the other signs again on top.
        codes = await asyncio.gather(owner.link_device(), second.link_device())
        for i, code in enumerate(codes):
            opened.append(await Client.open_linked(code, tmp_path / f"n{i}.db", mesh.endpoints("c")))
        listed = {d.device_id for d in await owner.devices()}
        assert listed == {c.device_id for c in opened} and len(listed) == 4
    finally:
        for client in opened:
            await client.close()


async def test_send_many_is_synced_to_our_other_devices_too(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        alice2 = await _linked(alice, tmp_path / "a2.db", mesh, "c")
        try:
            await alice.send(bob_name, "first")  # alice's SDK pins her own list (with alice2)
            outcomes = await alice.send_many([(bob_name, "x"), (bob_name, "y")])
            assert [o.recipient_device for o in outcomes] == [bob.device_id, bob.device_id]
            inbox = alice2.messages()
            copies = [await _receive(alice2, inbox) for _ in range(3)]
            assert [(c.sent_to, c.text) for c in copies] == [(bob_name, "first"), (bob_name, "x"), (bob_name, "y")]
        finally:
            await alice2.close()
