"""Attacks on linked devices through the public SDK on the real three-region mesh (issue 9, docs/adr/0011).

The hostile directory is real: whoever controls auth's store (a malicious
operator, a compromised region) writes records straight into JetStream with
the admin credentials, and a device it controls is an ordinary ``Client``
logged in with the key it planted. What it cannot do is sign with an
account key.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest

from xchat.client import Client, DeviceListRejected, Message, SecurityEvent, Undecryptable
from xchat.client._sentsync import SENT_CONTENT_TYPE, wrap
from xchat.core.devices import DeviceRecord
from xchat.core.ids import AccountId, DeviceId, new_device_id
from xchat.mesh.local import LocalMesh
from xchat.statements import register_statement
from xchat.v1 import auth_pb2, auth_pb2_grpc


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _next(stream: AsyncIterator[Any], timeout: float = 20.0) -> Any:
    return await asyncio.wait_for(anext(stream), timeout)


async def _events_until(stream: AsyncIterator[SecurityEvent], wanted: int, timeout: float = 20.0) -> list[SecurityEvent]:
    seen: list[SecurityEvent] = []
    while len(seen) < wanted:
        seen.append(await _next(stream, timeout))
    return seen


async def _read_all(client: Client) -> Message:
    async for message in client.messages():
        return message
    raise AssertionError("the message stream ended")


class HostileDirectory:
    """Auth's store, written directly (what a malicious operator or compromised region can do)."""

    def __init__(self, mesh: LocalMesh) -> None:
        self._mesh = mesh
        self._nc: Any = None

    async def __aenter__(self) -> HostileDirectory:
        self._nc = await nats.connect(self._mesh.nats_urls("a"), **self._mesh.admin_credentials, tls=self._mesh.nats_tls())
        js = self._nc.jetstream()
        self.accounts = await js.key_value("xchat_accounts")
        self.devices = await js.key_value("xchat_devices")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._nc.close()

    async def account_record(self, account: str) -> bytes:
        return bytes((await self.accounts.get(account)).value)

    async def plant_device(self, account: str, identity_key: bytes) -> str:
        """A device of ``account`` with the attacker's key, in the store and the account record."""
        device = new_device_id()
        record = DeviceRecord(DeviceId(device), AccountId(account), identity_key, revoked=False, created_at_ms=int(time.time() * 1000))
        await self.devices.create(device, record.encode())
        raw = json.loads(await self.account_record(account))
        raw["devices"].append(device)
        await self.accounts.put(account, json.dumps(raw).encode())
        return device

    async def rekey_device(self, device: str, identity_key: bytes) -> None:
        """The directory says ``device`` has the attacker's key (a login under it works from now on)."""
        entry = await self.devices.get(device)
        record = DeviceRecord.decode(DeviceId(device), bytes(entry.value))
        swapped = DeviceRecord(record.device, record.account, identity_key, record.revoked, record.created_at_ms)
        await self.devices.put(device, swapped.encode())


async def _attacker_device(path: Path, mesh: LocalMesh, account: str, directory: HostileDirectory, *, device: str | None = None) -> Client:
    """A Client holding the attacker's key, logged in as a device the directory planted (or re-keyed)."""
    attacker = await Client.open(path, mesh.endpoints("c"))
    key = attacker._book.ensure_identity().public
    planted = device is None
    if device is None:
        device = await directory.plant_device(account, key)
    else:
        await directory.rekey_device(device, key)
    attacker._state.set_meta("account", account.encode())
    attacker._state.set_meta("device_id", device.encode())
    # The device logs in with the planted key and publishes its own signed prekeys (a re-keyed
    # device's one-time key ids are taken already: the signed ones are enough for a bundle).
    await attacker.publish_prekeys(one_time=50 if planted else 0, pq=20 if planted else 0, rotate_signed=True)
    return attacker


async def test_a_token_alone_cannot_add_a_device(mesh: LocalMesh, tmp_path: Path) -> None:
    async with await Client.open(tmp_path / "o.db", mesh.endpoints("a")) as owner:
        await owner.register(_name("owner"))
        token = await owner._tokens.token()  # a stolen access token of the account
        import nacl.signing

        newcomer = nacl.signing.SigningKey.generate()
        ik = bytes(newcomer.verify_key)
        request = auth_pb2.AddDeviceRequest(identity_key=ik, signature=newcomer.sign(register_statement(owner.account, ik)).signature)
        async with grpc.aio.insecure_channel(mesh.endpoints("b")[0]) if mesh.root_certificates is None else grpc.aio.secure_channel(
            mesh.endpoints("b")[0], grpc.ssl_channel_credentials(mesh.root_certificates)
        ) as channel:
            stub = auth_pb2_grpc.AuthStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.AddDevice(request, metadata=(("authorization", f"Bearer {token}"),))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "account_signature" in (err.value.details() or "")
            # Signed by another key than the account's: refused too.
            request.account_signature = newcomer.sign(b"anything").signature
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.AddDevice(request, metadata=(("authorization", f"Bearer {token}"),))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert [d.device_id for d in await owner.devices()] == [owner.device_id]


async def test_a_device_the_directory_planted_gets_no_session_and_cannot_speak_for_the_account(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with HostileDirectory(mesh) as directory, await Client.open(
        tmp_path / "a.db", mesh.endpoints("a")
    ) as alice, await Client.open(tmp_path / "b.db", mesh.endpoints("b")) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        planted = await _attacker_device(tmp_path / "m.db", mesh, alice_name, directory)
        try:
            events = bob.events()
            # Bob's first message to alice: encrypted to alice's real device only (bundles
            # are asked for the signed list's devices, so the planted one is never even fetched).
            receipts = await bob.send(alice_name, "for alice's own devices")
            assert [r.recipient_device for r in receipts] == [alice.device_id]

            # The planted device writes to bob as alice: refused, never shown.
            inbox = bob.messages()
            await planted.send(bob_name, "it's alice, from my new phone")
            await alice.send(bob_name, "the real alice")
            genuine: Message = await _next(inbox)
            assert (genuine.sender_device, genuine.text) == (alice.device_id, "the real alice")
            refused = await _events_until(events, 2)
            assert any(isinstance(e, DeviceListRejected) and e.problem == "unlisted" and e.device == planted.device_id for e in refused)
            assert any(isinstance(e, Undecryptable) and e.sender_device == planted.device_id for e in refused)
        finally:
            await planted.close()


async def test_the_directory_lying_about_a_device_key_is_refused(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with HostileDirectory(mesh) as directory, await Client.open(
        tmp_path / "a.db", mesh.endpoints("a")
    ) as alice, await Client.open(tmp_path / "b.db", mesh.endpoints("b")) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        alice2 = await Client.open_linked(await alice.link_device(), tmp_path / "a2.db", mesh.endpoints("c"))
        victim_device = alice2.device_id
        await alice2.close()
        # The directory now gives alice2's device id the attacker's key (and its bundle).
        impostor = await _attacker_device(tmp_path / "m.db", mesh, alice_name, directory, device=victim_device)
        try:
            events = bob.events()
            receipts = await bob.send(alice_name, "hello alice")
            assert [r.recipient_device for r in receipts] == [alice.device_id]
            (event,) = await _events_until(events, 1)
            assert isinstance(event, DeviceListRejected)
            assert (event.device, event.problem) == (victim_device, "key_mismatch")
        finally:
            await impostor.close()


async def test_a_device_list_rollback_is_refused(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with HostileDirectory(mesh) as directory, await Client.open(
        tmp_path / "a.db", mesh.endpoints("a")
    ) as alice, await Client.open(tmp_path / "b.db", mesh.endpoints("b")) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        old_record = await directory.account_record(alice_name)  # version 1: alice alone
        alice2 = await Client.open_linked(await alice.link_device(), tmp_path / "a2.db", mesh.endpoints("c"))
        try:
            await bob.send(alice_name, "hello both")  # bob verified version 2
            # The directory serves version 1 again and a third device bob has never seen writes.
            alice3 = await Client.open_linked(await alice.link_device(), tmp_path / "a3.db", mesh.endpoints("a"))
            await directory.accounts.put(alice_name, old_record)
            # Without a sender certificate bob must ask the directory about alice3 (with one, its
            # newer list version vouches for it: test_client_sender_certs.py).
            alice3._book.certificate = lambda: b""  # type: ignore[method-assign]
            events = bob.events()
            reader = asyncio.create_task(_read_all(bob))  # the receive path raises the events
            try:
                await alice3.send(bob_name, "hi from my third device")
                event = await _next(events)
                assert isinstance(event, DeviceListRejected)
                assert (event.account, event.problem) == (alice_name, "rollback")
                dropped = await _next(events)
                assert isinstance(dropped, Undecryptable) and dropped.sender_device == alice3.device_id
                assert not reader.done()  # nothing reached the app
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await alice3.close()
        finally:
            await alice2.close()


async def test_a_revoked_peer_device_does_not_break_sends(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        alice2 = await Client.open_linked(await alice.link_device(), tmp_path / "a2.db", mesh.endpoints("c"))
        gone = alice2.device_id
        await alice2.close()
        receipts = await bob.send(alice_name, "to both")
        assert {r.recipient_device for r in receipts} == {alice.device_id, gone}

        await alice.revoke_device(gone)
        # Relay refuses the revoked device (NOT_FOUND, once its 2 s cache expires); bob's SDK
        # refetches the signed list, which no longer names it: the send succeeds to alice's device.
        deadline = time.monotonic() + 15
        while True:
            receipts = await bob.send(alice_name, "after the revocation")
            if [r.recipient_device for r in receipts] == [alice.device_id] or time.monotonic() > deadline:
                break
        assert [r.recipient_device for r in receipts] == [alice.device_id]
        inbox = alice.messages()
        texts = set()
        while "after the revocation" not in texts:
            message = await _next(inbox)
            texts.add(message.text)
            await alice.ack(message)


async def test_a_contact_cannot_pass_a_message_off_as_sent_by_us(mesh: LocalMesh, tmp_path: Path) -> None:
    victim_name, mallory_name = _name("victim"), _name("mallory")
    async with await Client.open(tmp_path / "v.db", mesh.endpoints("a")) as victim, await Client.open(
        tmp_path / "m.db", mesh.endpoints("b")
    ) as mallory:
        await victim.register(victim_name)
        await mallory.register(mallory_name)
        with pytest.raises(ValueError):  # the app cannot send the sync content type
            await mallory.send(victim_name, "x", content_type=SENT_CONTENT_TYPE)
        # A hostile client can: a "copy of what the victim sent to carol" from mallory's account.
        forged = wrap("carol", "text/plain", b"I owe mallory 1000")
        await mallory._sender.send(victim_name, forged, SENT_CONTENT_TYPE)
        inbox = victim.messages()
        got: Message = await _next(inbox)
        assert got.sent_to is None and got.sender_account == mallory_name
        assert got.content_type == SENT_CONTENT_TYPE  # shown as what it is, from mallory
        await victim.ack(got)


async def test_a_revoked_device_no_longer_speaks_for_the_account(mesh: LocalMesh, tmp_path: Path) -> None:
    """A revoked device keeps its session with a contact and the contact's delivery key: relay cannot
    tell (sealed sends are anonymous), the contact's SDK must, once it holds the list without it."""
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        alice2 = await Client.open_linked(await alice.link_device(), tmp_path / "a2.db", mesh.endpoints("c"))
        try:
            await bob.send(alice_name, "hello both")
            inbox2 = alice2.messages()
            await alice2.ack(await _next(inbox2))  # alice2 now has a session with bob and his delivery key
            await inbox2.aclose()
            await alice.revoke_device(alice2.device_id)
            # Bob's SDK learns the new list (relay refuses the revoked device; the refreshed list lacks it).
            deadline = time.monotonic() + 15
            while alice2.device_id in {r.recipient_device for r in await bob.send(alice_name, "after")}:
                assert time.monotonic() < deadline

            events, inbox = bob.events(), bob.messages()
            await alice2.send(bob_name, "still alice, honest")  # sealed: relay stores it
            await alice.send(bob_name, "the real alice")
            got: Message = await _next(inbox)
            assert (got.sender_device, got.text) == (alice.device_id, "the real alice")
            event = await _next(events)
            assert isinstance(event, DeviceListRejected)
            assert (event.account, event.device, event.problem) == (alice_name, alice2.device_id, "unlisted")
        finally:
            await alice2.close()
