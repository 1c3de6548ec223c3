"""Signed prekey rotation, through the public SDK against the real three-region mesh.

The recipient's clock is injected (``Client.open(clock=...)``) and moved by the
test: ages and grace periods are never waited for. What the directory serves
is read with an ordinary FetchBundles, as any sender does.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from xchat.client import Client, Message, Undecryptable
from xchat.client._rotation import PREKEY_ROTATION_AGE_MS
from xchat.client.crypto import BundleSignatureError
from xchat.client.crypto.prekey_store import PREKEY_GRACE_MS
from xchat.mesh.local import LocalMesh
from xchat.v1 import keys_pb2, keys_pb2_grpc

DAY = 24 * 3600.0


class Clock:
    """A wall clock (seconds) that tests move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _next(stream: AsyncIterator[Any], timeout: float = 15.0) -> Any:
    return await asyncio.wait_for(anext(stream), timeout)


async def _served(reader: Client, account: str) -> keys_pb2.PrekeyBundle:
    """The one bundle the keys service serves for ``account`` (claims a one-time key, as a sender would)."""
    request = keys_pb2.FetchBundlesRequest(account=account)
    reply: keys_pb2.FetchBundlesResponse = await reader._tokens.authed(
        lambda ch, t, md: keys_pb2_grpc.KeysStub(ch).FetchBundles(request, timeout=t, metadata=md), service="keys"
    )
    [bundle] = reply.bundles
    return bundle


async def _spk_id(reader: Client, account: str) -> int:
    return int((await _served(reader, account)).signed_prekey.key_id)


async def _wait_for_spk_above(reader: Client, account: str, old: int, timeout: float = 15.0) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        current = await _spk_id(reader, account)
        if current > old:
            return current
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"signed prekey of {account} still {current}, expected above {old}")
        await asyncio.sleep(0.25)


async def _receive(client: Client, inbox: AsyncIterator[Message]) -> Message:
    message: Message = await _next(inbox)
    await client.ack(message)
    return message


async def test_a_new_contact_after_rotation_uses_the_new_key(mesh: LocalMesh, tmp_path: Path) -> None:
    bob_name, carol_name = _name("bob"), _name("carol")
    async with await Client.open(tmp_path / "b.db", mesh.endpoints("a")) as bob, await Client.open(
        tmp_path / "c.db", mesh.endpoints("b")
    ) as carol:
        await bob.register(bob_name)
        await carol.register(carol_name)
        before = await _spk_id(carol, bob_name)
        served_before = await _served(carol, bob_name)
        await bob.rotate_prekeys()
        served = await _served(carol, bob_name)
        assert served.signed_prekey.key_id > before, "ids increase"
        assert served.signed_prekey.public_key != served_before.signed_prekey.public_key

        await carol.send(bob_name, "first contact after the rotation")
        got = await _receive(bob, bob.messages())
        assert (got.sender_account, got.text) == (carol_name, "first contact after the rotation")
        assert bob.undecryptable == 0


async def test_last_resort_key_rotates_with_the_signed_prekey(mesh: LocalMesh, tmp_path: Path) -> None:
    bob_name, carol_name = _name("bob"), _name("carol")
    async with await Client.open(tmp_path / "b.db", mesh.endpoints("a")) as bob, await Client.open(
        tmp_path / "c.db", mesh.endpoints("b")
    ) as carol:
        await bob.register(bob_name)
        await carol.register(carol_name)
        # Once bob's PQ one-time keys are claimed, the directory serves the last-resort key.
        old = await _served(carol, bob_name)
        for _ in range(100):
            if old.pq_prekey_is_last_resort:
                break
            old = await _served(carol, bob_name)
        assert old.pq_prekey_is_last_resort
        await bob.rotate_prekeys()
        new = await _served(carol, bob_name)
        assert new.pq_prekey_is_last_resort and new.pq_prekey.key_id > old.pq_prekey.key_id
        assert new.pq_prekey.public_key != old.pq_prekey.public_key
        await carol.send(bob_name, "on the new last-resort key")
        got = await _receive(bob, bob.messages())
        assert got.text == "on the new last-resort key"


async def test_a_first_message_built_on_the_previous_key_opens_within_the_grace(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    clock = Clock()
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b"), clock=clock
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        old = await _spk_id(alice, bob_name)
        # Built (and stored by the mailbox) on the current key, read after the rotation.
        await alice.send(bob_name, "sent before the rotation")
        await bob.rotate_prekeys()
        assert await _spk_id(alice, bob_name) > old
        clock.advance(PREKEY_GRACE_MS / 1000 - DAY)  # late, but within the grace
        got = await _receive(bob, bob.messages())
        assert (got.sender_account, got.text) == (alice_name, "sent before the rotation")
        assert bob.undecryptable == 0


async def test_a_first_message_on_a_key_past_its_grace_is_refused_and_nothing_else_breaks(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    alice_name, bob_name, carol_name = _name("alice"), _name("bob"), _name("carol")
    clock = Clock()
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b"), clock=clock
    ) as bob, await Client.open(tmp_path / "c.db", mesh.endpoints("c")) as carol:
        await alice.register(alice_name)
        await bob.register(bob_name)
        await carol.register(carol_name)
        await alice.send(bob_name, "built on a key about to expire")
        await bob.rotate_prekeys()  # the key alice used is retired now...
        clock.advance(PREKEY_GRACE_MS / 1000 + 60)
        await bob.rotate_prekeys()  # ...and deleted by the next rotation past its grace

        # The receive loop runs while the app reads messages().
        receiving = asyncio.create_task(_receive(bob, bob.messages()))
        event = await _next(bob.events())
        assert isinstance(event, Undecryptable)
        assert (event.sender_account, event.sender_device) == (alice_name, alice.device_id)
        assert "UnknownPrekeyError" in event.reason
        assert bob.undecryptable == 1

        # A new contact opens (on the current key), and bob can still reach alice.
        await carol.send(bob_name, "hello from carol")
        got = await asyncio.wait_for(receiving, 15)
        assert (got.sender_account, got.text) == (carol_name, "hello from carol")
        await bob.send(alice_name, "please resend")
        back = await _receive(alice, alice.messages())
        assert (back.sender_account, back.text) == (bob_name, "please resend")
        assert bob.undecryptable == 1


async def test_keys_older_than_the_rotation_age_rotate_on_the_next_open_and_send(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    clock = Clock()
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice:
        await alice.register(alice_name)
        async with await Client.open(tmp_path / "b.db", mesh.endpoints("b"), clock=clock) as bob:
            await bob.register(bob_name)
            first = await _spk_id(alice, bob_name)
            clock.advance(PREKEY_ROTATION_AGE_MS / 1000 - 3600)
            await bob.send(alice_name, "young keys")  # checked, not due
            await _receive(alice, alice.messages())
            await asyncio.sleep(0.5)
            assert await _spk_id(alice, bob_name) == first

        clock.advance(2 * 3600)  # now older than the age: the next open rotates
        async with await Client.open(tmp_path / "b.db", mesh.endpoints("b"), clock=clock) as bob:
            second = await _wait_for_spk_above(alice, bob_name, first)
            clock.advance(PREKEY_ROTATION_AGE_MS / 1000 + 1)  # and again, seen by a send
            await bob.send(alice_name, "old keys")
            await _wait_for_spk_above(alice, bob_name, second)

        # The conversation goes on across both rotations.
        await alice.send(bob_name, "after two rotations")
        async with await Client.open(tmp_path / "b.db", mesh.endpoints("b"), clock=clock) as bob:
            got = await _receive(bob, bob.messages())
            assert got.text == "after two rotations" and bob.undecryptable == 0


@pytest.mark.parametrize("forgery", ["other_key", "relabelled_old_key"])
async def test_a_directory_serving_a_badly_signed_rotated_key_is_refused(
    mesh: LocalMesh, tmp_path: Path, forgery: str
) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        old = await _served(alice, bob_name)
        await bob.rotate_prekeys()
        new_id = await _spk_id(alice, bob_name)

        # A man in the middle of alice's directory calls: bob's bundle carries,
        # under the new key id, a key bob never signed (or the old key relabelled).
        genuine = alice._tokens.authed

        async def tampering(invoke: Any, *, service: str) -> Any:
            reply = await genuine(invoke, service=service)
            if isinstance(reply, keys_pb2.FetchBundlesResponse):
                for bundle in reply.bundles:
                    if forgery == "other_key":
                        bundle.signed_prekey.public_key = secrets.token_bytes(32)
                    else:
                        bundle.signed_prekey.public_key = old.signed_prekey.public_key
                        bundle.signed_prekey.signature = old.signed_prekey.signature
                    bundle.signed_prekey.key_id = new_id
            return reply

        alice._tokens.authed = tampering  # type: ignore[method-assign]
        with pytest.raises(BundleSignatureError) as refused:
            await alice.send(bob_name, "to a forged key")
        assert (refused.value.key, refused.value.key_id) == ("signed_prekey", new_id)
        assert alice._state.session_devices(bob_name) == [], "no session on a forged key"

        alice._tokens.authed = genuine  # type: ignore[method-assign]
        await alice.send(bob_name, "to the genuine key")
        got = await _receive(bob, bob.messages())
        assert got.text == "to the genuine key" and bob.undecryptable == 0
