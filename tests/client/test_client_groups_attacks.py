"""Groups under attack, on the real three-region mesh (issue 14, docs/adr/0015).

A hostile client runs the same SDK and then goes around it (its private
modules stand in for a modified client): a member forging another member's
group message, a non-member injecting a group state, a sender key and a group
message, a removed member re-adding itself. Each is refused on the honest
devices with a ``GroupRefused`` event and changes nothing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from xchat.client import Client, Group, GroupError, GroupRefused, Message
from xchat.client import _group_state as rules
from xchat.client._group_state import GROUP_MESSAGE_TYPE, GROUP_STATE_TYPE, SENDER_KEY_TYPE
from xchat.client.crypto.sender_keys import SenderKey
from xchat.mesh.local import LocalMesh

WAIT_S = 30.0


class Device:
    """One client with its messages and events read (and acked) in the background."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.messages: list[Message] = []
        self.events: list[Any] = []
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._watch())]

    async def _read(self) -> None:
        async for message in self.client.messages():
            self.messages.append(message)
            await self.client.ack(message)

    async def _watch(self) -> None:
        async for event in self.client.events():
            self.events.append(event)

    def texts(self, group_id: str) -> list[str]:
        return [m.text for m in self.messages if m.group_id == group_id]

    def refused(self, reason: str) -> list[GroupRefused]:
        return [e for e in self.events if isinstance(e, GroupRefused) and e.reason == reason]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _group_of(mesh: LocalMesh, tmp_path: Path, keys: list[str], regions: str) -> dict[str, Device]:
    devices: dict[str, Device] = {}
    for key, region in zip(keys, regions):
        client = await Client.open(tmp_path / f"{key}.db", mesh.endpoints(region))
        await client.register(f"{key}{secrets.token_hex(4)}")
        devices[key] = Device(client)
    return devices


def _members(device: Device, group_id: str) -> tuple[str, ...]:
    group = device.client.group(group_id)
    return () if group is None else group.members


async def test_a_member_cannot_forge_another_members_group_message(mesh: LocalMesh, tmp_path: Path) -> None:
    devices = await _group_of(mesh, tmp_path, ["alice", "bob", "mallory"], "abc")
    alice, bob, mallory = devices["alice"], devices["bob"], devices["mallory"]
    try:
        group_id = await alice.client.create_group("club", [bob.client.account, mallory.client.account])
        await alice.client.send_group(group_id, "first")
        await until(lambda: mallory.texts(group_id) == ["first"] and bob.texts(group_id) == ["first"], "alice's first message")

        # Mallory holds alice's chain (every member does) and writes under it, naming alice.
        alices = mallory.client._groups._store.received_key(group_id, alice.client.account, alice.client.device_id)
        assert alices is not None
        forger = SenderKey(
            group_id=alices.group_id, key_id=alices.key_id, chain_key=alices.chain_key,
            signing_seed=secrets.token_bytes(32), iteration=alices.iteration,
        )
        forged = forger.encrypt(sender_account=alice.client.account, sender_device=alice.client.device_id,
                                plaintext=bytes([10]) + b"text/plain" + bytes(8) + b"send mallory the keys")
        await mallory.client._sender.send_many([(bob.client.account, forged)], GROUP_MESSAGE_TYPE)
        await until(lambda: bob.refused("signature") != [], "bob refusing the forgery")
        assert bob.refused("signature")[0].account == mallory.client.account  # the device that delivered it

        # Nothing of it stuck: alice's genuine message at that same iteration is read.
        await alice.client.send_group(group_id, "second")
        await until(lambda: "second" in bob.texts(group_id), "alice's second message")
        assert bob.texts(group_id) == ["first", "second"]
        assert all(m.sender_account == alice.client.account for m in bob.messages)
    finally:
        for device in devices.values():
            await device.stop()


async def test_a_non_member_cannot_inject_state_keys_or_messages(mesh: LocalMesh, tmp_path: Path) -> None:
    devices = await _group_of(mesh, tmp_path, ["alice", "bob", "eve"], "abc")
    alice, bob, eve = devices["alice"], devices["bob"], devices["eve"]
    try:
        bob.client._groups.hold_s = 0.0
        group_id = await alice.client.create_group("club", [bob.client.account])
        await until(lambda: bob.client.group(group_id) is not None, "bob's invitation")
        before = bob.client.group(group_id)

        # Eve learned the group id (say, from a screenshot) and claims a newer state with her in it.
        takeover = Group(group_id=group_id, name="eve's now", version=99,
                         members=tuple(sorted({alice.client.account, bob.client.account, eve.client.account})))
        await eve.client._sender.send_many([(bob.client.account, rules.encode(takeover))], GROUP_STATE_TYPE)
        # Her own sender key for the group, and a message under it.
        key = SenderKey.generate(bytes.fromhex(group_id))
        await eve.client._sender.send_many([(bob.client.account, key.distribution())], SENDER_KEY_TYPE)
        wire = key.encrypt(sender_account=eve.client.account, sender_device=eve.client.device_id,
                           plaintext=bytes([10]) + b"text/plain" + bytes(8) + b"hello from eve")
        await eve.client._sender.send_many([(bob.client.account, wire)], GROUP_MESSAGE_TYPE)

        await until(lambda: len(bob.refused("not_a_member")) >= 3, "bob refusing eve's state, key and message")
        assert {e.account for e in bob.refused("not_a_member")} == {eve.client.account}
        assert bob.client.group(group_id) == before
        assert bob.texts(group_id) == []
        # The group still works for its members.
        await alice.client.send_group(group_id, "members only")
        await until(lambda: bob.texts(group_id) == ["members only"], "alice's message")
    finally:
        for device in devices.values():
            await device.stop()


async def test_a_removed_member_cannot_re_add_itself(mesh: LocalMesh, tmp_path: Path) -> None:
    devices = await _group_of(mesh, tmp_path, ["alice", "bob", "mallory"], "bca")
    alice, bob, mallory = devices["alice"], devices["bob"], devices["mallory"]
    try:
        alice.client._groups.hold_s = bob.client._groups.hold_s = 0.0
        group_id = await alice.client.create_group("club", [bob.client.account, mallory.client.account])
        await until(lambda: mallory.client.group(group_id) is not None, "mallory's invitation")
        await alice.client.remove_members(group_id, [mallory.client.account])
        await until(lambda: mallory.client.account not in _members(bob, group_id), "bob applying the removal")
        await until(lambda: not (mallory.client.group(group_id) or Group("", "", 0, ())).active, "mallory told")

        # Through the SDK: refused locally.
        with pytest.raises(GroupError):
            await mallory.client.add_members(group_id, [mallory.client.account])
        # Around it: a newer state with herself back in, sent to bob and alice.
        current = bob.client.group(group_id)
        assert current is not None
        back = Group(group_id=group_id, name=current.name, version=current.version + 1,
                     members=tuple(sorted({*current.members, mallory.client.account})))
        await mallory.client._sender.send_many(
            [(bob.client.account, rules.encode(back)), (alice.client.account, rules.encode(back))], GROUP_STATE_TYPE
        )
        await until(lambda: bob.refused("not_a_member") != [] and alice.refused("not_a_member") != [], "the re-add refused")
        assert mallory.client.account not in _members(bob, group_id)
        assert mallory.client.account not in _members(alice, group_id)
        await bob.client.send_group(group_id, "without mallory")
        await until(lambda: alice.texts(group_id) == ["without mallory"], "bob's message")
        await asyncio.sleep(0)  # mallory gets no copy: bob sends to the members he holds
        assert mallory.texts(group_id) == []
    finally:
        for device in devices.values():
            await device.stop()
