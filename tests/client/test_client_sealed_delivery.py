"""Unidentified delivery (issue 17) through the public SDK against the real three-region mesh.

Once two devices have exchanged a message, each knows the other's profile key
(carried inside the sealed layer) and sends on ``Relay.SendSealed`` with the
derived delivery key and no access token: the servers do not learn who sends.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from pathlib import Path

import grpc
import grpc.aio
import nats

from xchat.client import Client, Message, ServiceUnavailable
from xchat.client.crypto import delivery_key
from xchat.core.envelopes import StoredEnvelope
from xchat.core.ids import DeviceId
from xchat.mesh.local import LocalMesh
from xchat.relay.sending import dedup_id
from xchat.v1 import relay_pb2, relay_pb2_grpc

STREAM = "XCHAT_MAILBOX"
# Relay caches device records (and so delivery verifiers) this long (xchat.core.devices.CACHE_TTL_S), plus margin.
CACHE_BOUND_S = 2.5


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _next(messages, timeout: float = 15.0) -> Message:
    return await asyncio.wait_for(anext(messages), timeout)


class _NoToken:
    """Stands in for the sender's access tokens: a sealed send must never ask for one."""

    async def token(self) -> str:
        raise ServiceUnavailable("the sealed path asked for an access token")

    def invalidate(self) -> None:
        pass


async def _introduce(alice: Client, bob: Client, alice_name: str, bob_name: str, bob_inbox, alice_inbox) -> None:
    """alice → bob (authenticated: she does not know bob's key yet), bob → alice (sealed): both know each other's."""
    await alice.send(bob_name, "hello")
    await bob.ack(await _next(bob_inbox))
    await bob.send(alice_name, "hello back")
    await alice.ack(await _next(alice_inbox))
    assert alice._book.delivery.key_for(bob.device_id) is not None
    assert bob._book.delivery.key_for(alice.device_id) is not None


async def _mailbox_records(mesh: LocalMesh, device: str | None = None) -> list[tuple[dict[str, str], bytes]]:
    """Every (headers, data) JetStream holds in the mailbox stream (one device's subject, or all)."""
    nc = await nats.connect(mesh.nats_urls("a"), **mesh.admin_credentials, tls=mesh.nats_tls())
    try:
        js = nc.jetstream()
        out = []
        seq = 1
        while True:
            try:
                if device is None:
                    msg = await js.get_msg(STREAM, seq=seq, next=True)
                else:
                    msg = await js.get_msg(STREAM, seq=seq, subject=f"xchat.mbx.{device}", next=True)
            except nats.js.errors.NotFoundError:
                return out
            out.append((dict(msg.headers or {}), msg.data or b""))
            seq = msg.seq + 1
    finally:
        await nc.close()


async def _sealed_send(mesh: LocalMesh, region: str, to: str, key: bytes) -> tuple[str, str]:
    """A hostile client's raw SendSealed of one envelope: (status name, message)."""
    request = relay_pb2.SendRequest(recipient_device_id=to, message_id=secrets.token_bytes(16), ciphertext=b"spam", delivery_key=key)

    async def batches():
        yield relay_pb2.SendBatch(envelopes=[request])

    async with grpc.aio.insecure_channel(mesh.regions[region].endpoint) as channel:
        async for result in relay_pb2_grpc.RelayStub(channel).SendSealed(batches()):
            (one,) = result.results
            code = next(c.name for c in grpc.StatusCode if c.value[0] == one.error_code)
            return code, one.error_message
    raise AssertionError("no result")


async def test_a_sealed_conversation_across_regions_is_exactly_once_and_in_order(mesh: LocalMesh, tmp_path: Path) -> None:
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("c")
    ) as bob:
        alice_name, bob_name = _name("alice"), _name("bob")
        await alice.register(alice_name)
        await bob.register(bob_name)
        bob_inbox, alice_inbox = bob.messages(), alice.messages()
        await _introduce(alice, bob, alice_name, bob_name, bob_inbox, alice_inbox)

        # From here alice's sends carry no access token at all.
        alice._sender._tokens = _NoToken()  # type: ignore[assignment]
        bodies = [f"sealed {i}" for i in range(30)]
        for body in bodies[:10]:
            (receipt,) = await alice.send(bob_name, body)
            assert len(receipt.receipt) == 16 and not receipt.duplicate
        outcomes = await alice.send_many([(bob_name, body) for body in bodies[10:]])
        assert all(len(o.receipt) == 16 for o in outcomes), outcomes  # type: ignore[union-attr]

        got = []
        for _ in bodies:
            message = await _next(bob_inbox)
            got.append(message)
            await bob.ack(message)
        assert [m.text for m in got] == bodies, "in order"
        assert {m.sender_account for m in got} == {alice_name} and {m.sender_device for m in got} == {alice.device_id}
        assert [m.counter for m in got] == sorted(m.counter for m in got)
        # Exactly once: nothing more arrives, and a resent outbox is answered as a duplicate.
        try:
            extra = await asyncio.wait_for(anext(bob_inbox), 1.5)
            raise AssertionError(f"delivered twice: {extra.text}")
        except asyncio.TimeoutError:
            pass
        await bob_inbox.aclose()
        await alice_inbox.aclose()


async def test_wrong_or_rotated_delivery_keys_are_refused_and_store_nothing(mesh: LocalMesh, tmp_path: Path) -> None:
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("b")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("a")
    ) as bob:
        alice_name, bob_name = _name("alice"), _name("bob")
        await alice.register(alice_name)
        await bob.register(bob_name)
        bob_inbox, alice_inbox = bob.messages(), alice.messages()
        await _introduce(alice, bob, alice_name, bob_name, bob_inbox, alice_inbox)
        old_key = alice._book.delivery.key_for(bob.device_id)
        assert old_key is not None

        before = await _mailbox_records(mesh, bob.device_id)
        wrong = await _sealed_send(mesh, "c", bob.device_id, secrets.token_bytes(16))
        nobody = await _sealed_send(mesh, "c", secrets.token_hex(16), old_key)
        no_key = await _sealed_send(mesh, "b", bob.device_id, b"")
        # One answer for all three: a stranger learns nothing about which devices exist.
        assert wrong == nobody == no_key and wrong[0] == "UNAUTHENTICATED", (wrong, nobody, no_key)

        # bob blocks alice: a new profile key; her old key stops working within the cache bound.
        await bob.rotate_profile_key()
        await asyncio.sleep(CACHE_BOUND_S)
        assert await _sealed_send(mesh, "b", bob.device_id, old_key) == wrong
        await asyncio.sleep(0.5)
        assert await _mailbox_records(mesh, bob.device_id) == before, "a refused envelope was stored"

        # alice (not blocked by the app here) still reaches bob: her SDK falls back to the authenticated path ...
        await alice.send(bob_name, "after the rotation")
        message = await _next(bob_inbox)
        assert message.text == "after the rotation"
        await bob.ack(message)
        assert alice._book.delivery.key_for(bob.device_id) is None
        # ... until bob writes to her again, which carries his new profile key.
        await bob.send(alice_name, "my new key is inside")
        await alice.ack(await _next(alice_inbox))
        new_key = alice._book.delivery.key_for(bob.device_id)
        assert new_key is not None and new_key != old_key
        assert new_key == delivery_key(bob._book.delivery.profile_key())
        alice._sender._tokens = _NoToken()  # type: ignore[assignment]
        await alice.send(bob_name, "sealed again")
        assert (await _next(bob_inbox)).text == "sealed again"
        await bob_inbox.aclose()
        await alice_inbox.aclose()


async def test_jetstream_and_relay_logs_hold_nothing_of_the_sealed_sender(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(extra_env={"XCHAT_LOG_FORMAT": "json", "XCHAT_LOG_LEVEL": "debug"})
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("b")
    ) as bob:
        alice_name, bob_name = _name("alice"), _name("bob")
        await alice.register(alice_name)
        await bob.register(bob_name)
        bob_inbox, alice_inbox = bob.messages(), alice.messages()
        await _introduce(alice, bob, alice_name, bob_name, bob_inbox, alice_inbox)
        first_sealed = len(await _mailbox_records(mesh, bob.device_id))

        alice._sender._tokens = _NoToken()  # type: ignore[assignment]
        secrets_said = [f"launch code {i:04d}-PLAINTEXT-MARKER".encode() for i in range(5)]
        for body in secrets_said:
            await alice.send(bob_name, body)
        await asyncio.sleep(1.0)  # every replica applied the writes

        records = await _mailbox_records(mesh, bob.device_id)
        sealed = records[first_sealed:]
        assert len(sealed) == len(secrets_said), "positive control: we read the stored envelopes"
        captured = b"".join(json.dumps(headers).encode() + data for headers, data in sealed)
        for needle, what in (
            (alice_name.encode(), "sender account"),
            (alice.device_id.encode(), "sender device id (hex)"),
            (bytes.fromhex(alice.device_id), "sender device id (bytes)"),
            (alice._book.identity.public, "sender identity key"),
            (b"PLAINTEXT-MARKER", "plaintext"),
        ):
            assert needle not in captured, f"{what} stored in the mailbox stream"
        # The de-duplication id is sha256(recipient, message id): nothing of the sender's.
        for headers, data in sealed:
            assert set(headers) <= {"Nats-Msg-Id", "Nats-Expected-Stream"}, headers
            envelope = StoredEnvelope.decode(data)
            assert envelope is not None
            assert headers["Nats-Msg-Id"] == dedup_id(DeviceId(bob.device_id), envelope.message_id)
        # Ciphertexts of one bucket have one length: these bodies (26 bytes) share the first block.
        assert len({len(data) for _, data in sealed}) == 1

        got = [await _next(bob_inbox) for _ in secrets_said]
        assert [m.body for m in got] == secrets_said and {m.sender_account for m in got} == {alice_name}

        # Relay's log lines for the sealed sends: present, and naming nobody.
        logs = [mesh.workdir / "logs" / f"services-{r}.log" for r in mesh.regions]
        lines = [json.loads(line) for path in logs for line in path.read_text().splitlines() if line.startswith("{")]
        sealed_lines = [line for line in lines if line.get("method") == "/xchat.v1.Relay/SendSealed"]
        assert sealed_lines, "positive control: relay logged the sealed calls"
        text = json.dumps(sealed_lines)
        assert alice_name not in text and alice.device_id not in text
        assert hashlib.sha256(alice._book.identity.public).hexdigest() not in text
        await bob_inbox.aclose()
        await alice_inbox.aclose()
