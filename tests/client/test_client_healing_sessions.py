"""Sessions that heal, through the public SDK against the real three-region mesh (issue 9).

Crossed first contact, a gap beyond the skip bound healed by a retry request
and a session reset, and what a hostile contact (or mailbox) can and cannot
make the SDK do with retry requests. A hostile contact is an ordinary
``Client`` whose internals it drives by hand.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from xchat.client import Client, Message, MessagesDelivered, SecurityEvent, SessionReset, Undecryptable
from xchat.client._retries import RETRY_CONTENT_TYPE, encode_retry
from xchat.client._sessions import EncryptRequest
from xchat.client._state import OutboxItem
from xchat.client.crypto import Payload, seal
from xchat.client.crypto.ratchet import MAX_SKIP
from xchat.client.crypto.sessions import SessionRecord
from xchat.mesh.local import LocalMesh


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _next(stream: AsyncIterator[Any], timeout: float = 20.0) -> Any:
    return await asyncio.wait_for(anext(stream), timeout)


class Reader:
    """Reads (and acks) a client's messages and events in the background, as an app does."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.events: list[SecurityEvent] = []
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._watch())]

    async def _read(self) -> None:
        async for message in self.client.messages():
            await self.client.ack(message)
            await self.messages.put(message)

    async def _watch(self) -> None:
        async for event in self.client.events():
            self.events.append(event)

    async def texts(self, count: int, timeout: float = 30.0) -> list[str]:
        return [(await asyncio.wait_for(self.messages.get(), timeout)).text for _ in range(count)]

    async def event(self, kind: type, timeout: float = 30.0) -> Any:
        async def found() -> Any:
            while True:
                for event in self.events:
                    if isinstance(event, kind):
                        return event
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(found(), timeout)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _until(condition: Any, timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def _settled(client: Client) -> None:
    """Waits for the healing work already started (retry requests sent or answered)."""
    await asyncio.gather(*list(client._healer._tasks), return_exceptions=True)


async def test_simultaneous_first_contact_converges(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        # Both write first, at the same moment, before either has read anything:
        # two sessions are started, one by each side, and cross.
        await asyncio.gather(alice.send(bob_name, "a-first"), bob.send(alice_name, "b-first"))
        alice_reader, bob_reader = Reader(alice), Reader(bob)
        try:
            assert await alice_reader.texts(1) == ["b-first"]
            assert await bob_reader.texts(1) == ["a-first"]

            async def talk(client: Client, peer: str, tag: str) -> None:
                for i in range(20):
                    await client.send(peer, f"{tag}{i}")

            await asyncio.gather(talk(alice, bob_name, "a"), talk(bob, alice_name, "b"))
            assert await bob_reader.texts(20) == [f"a{i}" for i in range(20)]
            assert await alice_reader.texts(20) == [f"b{i}" for i in range(20)]
            assert alice.undecryptable == bob.undecryptable == 0
            assert not [e for e in alice_reader.events + bob_reader.events if isinstance(e, (Undecryptable, SessionReset))]
        finally:
            await alice_reader.stop()
            await bob_reader.stop()


def _lose_messages(client: Client, peer_device: str, peer_account: str, count: int) -> None:
    """Advances ``client``'s sending chain by ``count`` messages that never leave: what a
    sender does when a full mailbox refuses its envelopes and it drops them."""
    blob = client._state.session(peer_device)
    assert blob is not None
    record = SessionRecord.from_bytes(blob)
    for _ in range(count):
        record.current.encrypt(Payload.new(b"lost", counter=0))
    client._state.put_session(peer_device, peer_account, record.to_bytes())


async def test_a_gap_beyond_the_skip_bound_heals_by_a_reset(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        alice_reader, bob_reader = Reader(alice), Reader(bob)
        try:
            await alice.send(bob_name, "hello")
            assert await bob_reader.texts(1) == ["hello"]
            await bob.send(alice_name, "hi")
            assert await alice_reader.texts(1) == ["hi"]
            # Alice's delivered receipt for "hi" (sent on its own, issue 14) is read before her
            # chain jumps: after it, it would be one more envelope bob cannot read.
            await bob_reader.event(MessagesDelivered)

            _lose_messages(alice, bob.device_id, bob_name, MAX_SKIP + 1)
            (lost,) = await alice.send(bob_name, "after the gap")

            # Bob cannot read it (a gap beyond the bound), says so, and asks alice;
            # alice starts over and re-sends it as a new message.
            undecryptable = await bob_reader.event(Undecryptable)
            assert (undecryptable.message_id, undecryptable.sender_device) == (lost.message_id, alice.device_id)
            assert await bob_reader.texts(1) == ["after the gap"]
            reset = await alice_reader.event(SessionReset)
            assert (reset.account, reset.device, reset.resent) == (bob_name, bob.device_id, 1)

            for i in range(5):
                await alice.send(bob_name, f"a{i}")
                await bob.send(alice_name, f"b{i}")
            assert await bob_reader.texts(5) == [f"a{i}" for i in range(5)]
            assert await alice_reader.texts(5) == [f"b{i}" for i in range(5)]
            assert bob.undecryptable == 1 and alice.undecryptable == 0
            # Re-sent once: the plaintext kept for it is gone.
            assert alice._state.take_resendable(bob.device_id, bob_name, [lost.message_id]) == []
        finally:
            await alice_reader.stop()
            await bob_reader.stop()


async def test_lost_state_heals_by_a_reset(mesh: LocalMesh, tmp_path: Path) -> None:
    """Bob loses every session (a restored backup without them): alice's next message is
    a NORMAL message bob has no session for; bob starts one to ask, alice re-sends."""
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("c")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        alice_reader, bob_reader = Reader(alice), Reader(bob)
        try:
            await alice.send(bob_name, "hello")
            assert await bob_reader.texts(1) == ["hello"]
            await bob.send(alice_name, "hi")
            assert await alice_reader.texts(1) == ["hi"]
            bob._state._db.execute("DELETE FROM sessions")
            await alice.send(bob_name, "unreadable")
            assert await bob_reader.texts(1) == ["unreadable"]
            assert (await alice_reader.event(SessionReset)).resent == 1
            await bob.send(alice_name, "back")
            assert await alice_reader.texts(1) == ["back"]
        finally:
            await alice_reader.stop()
            await bob_reader.stop()


async def test_forged_retry_requests_reset_nothing_and_resend_nothing(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name, mallory_name = _name("alice"), _name("bob"), _name("mallory")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob, await Client.open(tmp_path / "m.db", mesh.endpoints("c")) as mallory:
        await alice.register(alice_name)
        await bob.register(bob_name)
        await mallory.register(mallory_name)
        alice_reader, bob_reader, mallory_reader = Reader(alice), Reader(bob), Reader(mallory)
        restarts: list[tuple[str, str]] = []
        real_restart = alice._healer._restart

        async def counting_restart(account: str, device: str) -> bool:
            restarts.append((account, device))
            return await real_restart(account, device)

        alice._healer._restart = counting_restart  # type: ignore[method-assign]
        try:
            sent_to_bob = [(await alice.send(bob_name, f"secret {i}"))[0].message_id for i in range(3)]
            assert await bob_reader.texts(3) == [f"secret {i}" for i in range(3)]
            await mallory.send(alice_name, "hi alice")
            assert await alice_reader.texts(1) == ["hi alice"]
            bob_session = alice._state.session(bob.device_id)

            # 1. Mallory, in its own authenticated session, asks for what alice sent bob
            #    (a mailbox knows the ids): nothing is re-sent to mallory, nothing reset.
            await mallory._sender.send_request(
                EncryptRequest(alice_name, (alice.device_id,), encode_retry(sent_to_bob), RETRY_CONTENT_TYPE, control=True)
            )
            # 2. The same, claiming to be bob in the sealed layer: refused as a sender mismatch.
            mallory._sender._sender = lambda: (bob_name, mallory.device_id)
            await mallory._sender.send_request(
                EncryptRequest(alice_name, (alice.device_id,), encode_retry(sent_to_bob), RETRY_CONTENT_TYPE, control=True)
            )
            mallory._sender._sender = lambda: (mallory_name, mallory.device_id)
            # 3. Garbage claiming bob's device, ten times: alice cannot read it and asks
            #    bob once (not ten times); bob sent none of those ids, so bob resets nothing.
            requests: list[EncryptRequest] = []
            real_send = alice._healer._send

            async def counting_send(request: EncryptRequest) -> object:
                requests.append(request)
                return await real_send(request)

            alice._healer._send = counting_send
            junk = [
                OutboxItem(
                    secrets.token_bytes(16),
                    alice.device_id,
                    alice_name,
                    seal(
                        sender_account=bob_name,
                        sender_device=bob.device_id,
                        inner=b"\x01" + secrets.token_bytes(120),
                        recipient_identity=alice._book.identity.public,
                    ),
                )
                for _ in range(10)
            ]
            for item in junk:
                mallory._sender._queue[(item.message_id, item.recipient_device)] = item
                await mallory._sender._await([item])
            await mallory.send(alice_name, "marker")
            assert await alice_reader.texts(1) == ["marker"]  # after all of the above, in order
            assert sum(isinstance(e, Undecryptable) for e in alice_reader.events) == 10
            await _until(lambda: len(requests) >= 1)
            assert requests[0].content_type == RETRY_CONTENT_TYPE and requests[0].devices == (bob.device_id,)
            # The other ids wait for the end of the interval (one request, not nine more).
            await _until(lambda: len(alice._healer._waiting.get((bob_name, bob.device_id), [])) > 0)
            assert len(requests) == 1

            await alice.send(mallory_name, "marker for mallory")
            assert await mallory_reader.texts(1) == ["marker for mallory"]  # nothing re-sent before it
            await alice.send(bob_name, "marker for bob")
            assert await bob_reader.texts(1) == ["marker for bob"]  # after alice's retry request
            await _settled(bob)
            await bob.send(alice_name, "marker from bob")
            assert await alice_reader.texts(1) == ["marker from bob"]
            assert not [e for e in alice_reader.events + bob_reader.events if isinstance(e, SessionReset)]
            assert restarts == []
            assert alice._state.session(bob.device_id) is not None
            assert bob_session is not None
            # Alice still holds what she sent bob, for bob alone.
            assert len(alice._state.take_resendable(bob.device_id, bob_name, sent_to_bob)) == 3
        finally:
            for reader in (alice_reader, bob_reader, mallory_reader):
                await reader.stop()


async def test_a_genuine_peer_cannot_cause_unbounded_resets(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        alice_reader, bob_reader = Reader(alice), Reader(bob)
        restarts: list[str] = []
        real_restart = alice._healer._restart

        async def counting_restart(account: str, device: str) -> bool:
            restarts.append(device)
            return await real_restart(account, device)

        alice._healer._restart = counting_restart  # type: ignore[method-assign]
        try:
            ids = [(await alice.send(bob_name, f"m{i}"))[0].message_id for i in range(3)]
            assert await bob_reader.texts(3) == ["m0", "m1", "m2"]
            # Bob (or bob's compromised device) asks again and again, each id twice.
            for message_id in ids + ids:
                await bob._sender.send_request(
                    EncryptRequest(alice_name, (alice.device_id,), encode_retry([message_id]), RETRY_CONTENT_TYPE, control=True)
                )
            # Each message re-sent once, to bob alone; one new session however often asked.
            assert sorted(await bob_reader.texts(3)) == ["m0", "m1", "m2"]
            await bob.send(alice_name, "done")
            assert await alice_reader.texts(1) == ["done"]
            await _settled(alice)
            assert restarts == [bob.device_id]
            resets = [e for e in alice_reader.events if isinstance(e, SessionReset)]
            assert sum(e.resent for e in resets) == 3
            await alice.send(bob_name, "still fine")
            assert await bob_reader.texts(1) == ["still fine"]
            assert bob_reader.messages.empty()
        finally:
            await alice_reader.stop()
            await bob_reader.stop()


async def test_an_app_cannot_send_control_payloads(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        try:
            await alice.send(bob_name, encode_retry([]), content_type=RETRY_CONTENT_TYPE)
        except ValueError as exc:
            assert "SDK's own" in str(exc)
        else:
            raise AssertionError("a control content type was accepted from the app")


async def test_a_replayed_retry_request_resends_and_resets_nothing(mesh: LocalMesh, tmp_path: Path) -> None:
    """A malicious mailbox (or anyone who captured it) delivers bob's genuine retry request
    again, under its own id and under a new one: alice re-sends nothing more, resets nothing more."""
    alice_name, bob_name, mallory_name = _name("alice"), _name("bob"), _name("mallory")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob, await Client.open(tmp_path / "m.db", mesh.endpoints("c")) as mallory:
        await alice.register(alice_name)
        await bob.register(bob_name)
        await mallory.register(mallory_name)
        # Bob's only encryption to alice before the replays must be the retry request itself:
        # an automatic delivered receipt for "once" was captured too (ci under load).
        bob.set_delivered_receipts(False)
        alice_reader, bob_reader = Reader(alice), Reader(bob)
        restarts: list[str] = []
        real_restart = alice._healer._restart

        async def counting_restart(account: str, device: str) -> bool:
            restarts.append(device)
            return await real_restart(account, device)

        alice._healer._restart = counting_restart  # type: ignore[method-assign]
        captured: list[OutboxItem] = []
        real_encrypt = bob._book.encrypt_many

        def capturing(**kwargs: Any) -> Any:
            outcomes = real_encrypt(**kwargs)
            captured.extend(i for o in outcomes if isinstance(o, list) for i in o)
            return outcomes

        bob._book.encrypt_many = capturing  # type: ignore[method-assign]
        try:
            (sent,) = await alice.send(bob_name, "once")
            assert await bob_reader.texts(1) == ["once"]
            await bob._sender.send_request(
                EncryptRequest(alice_name, (alice.device_id,), encode_retry([sent.message_id]), RETRY_CONTENT_TYPE, control=True)
            )
            assert await bob_reader.texts(1) == ["once"]  # re-sent, once
            await _until(lambda: any(isinstance(e, SessionReset) for e in alice_reader.events))
            (request,) = [i for i in captured if i.recipient_device == alice.device_id]
            replays = [request, OutboxItem(secrets.token_bytes(16), request.recipient_device, request.recipient_account, request.ciphertext)]
            for item in replays:
                mallory._sender._queue[(item.message_id, item.recipient_device)] = item
                await mallory._sender._await([item])
            await bob.send(alice_name, "after the replays")
            assert await alice_reader.texts(1) == ["after the replays"]
            await _settled(alice)
            await alice.send(bob_name, "marker")
            assert await bob_reader.texts(1) == ["marker"]  # nothing re-sent before it
            assert restarts == [bob.device_id]
            assert [e.resent for e in alice_reader.events if isinstance(e, SessionReset)] == [1]
        finally:
            await alice_reader.stop()
            await bob_reader.stop()


async def test_a_directory_swapping_the_key_during_a_reset_gets_nothing(mesh: LocalMesh, tmp_path: Path) -> None:
    """Bob genuinely asks for a resend; the directory (keys and device list alike) now serves
    mallory's identity key for bob's device. Alice starts no session with that key and re-sends
    in the session pinned to bob's key, which only bob can read."""
    alice_name, bob_name, mallory_name = _name("alice"), _name("bob"), _name("mallory")
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob, await Client.open(tmp_path / "m.db", mesh.endpoints("c")) as mallory:
        await alice.register(alice_name)
        await bob.register(bob_name)
        await mallory.register(mallory_name)
        alice_reader, bob_reader = Reader(alice), Reader(bob)
        mallory_bundle = mallory._book.prekeys  # the key material a lying directory would serve

        async def lying_directory(account: str, device: str) -> Any:
            from xchat.client.crypto import PrekeyBundle

            return PrekeyBundle.from_store(mallory_bundle)

        alice._healer._fresh_bundle = lying_directory  # type: ignore[method-assign]
        try:
            (sent,) = await alice.send(bob_name, "for bob only")
            assert await bob_reader.texts(1) == ["for bob only"]
            bob_key = alice._book.pinned_identity(bob.device_id)
            await bob._sender.send_request(
                EncryptRequest(alice_name, (alice.device_id,), encode_retry([sent.message_id]), RETRY_CONTENT_TYPE, control=True)
            )
            assert await bob_reader.texts(1) == ["for bob only"]  # re-sent, readable by bob: the pinned session
            assert alice._book.pinned_identity(bob.device_id) == bob_key != mallory._book.identity.public
            record = SessionRecord.from_bytes(alice._state.session(bob.device_id) or b"")
            keys = {record.current.their_identity_key} | {
                record.archived(i).their_identity_key for i in range(record.archived_count)
            }
            assert mallory._book.identity.public not in keys
        finally:
            await alice_reader.stop()
            await bob_reader.stop()
