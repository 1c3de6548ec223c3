"""A mailbox cannot be wedged: every Sync response fits the SDK's receive limit (issue 17).

Before the byte cap a Sync response carried up to 128 envelopes whatever their
size (≈16.8 MB), while the SDK accepts 4 MiB: these tests failed with
RESOURCE_EXHAUSTED on that code.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import grpc
import grpc.aio
import nats

from xchat.client import Client
from xchat.core.settings import DEFAULT_BUCKET_MAX_BYTES, DEFAULT_MAILBOX_MAX_BYTES, DEFAULT_MAILBOX_QUOTA
from xchat.mailbox.service import MAX_RESPONSE_BYTES
from xchat.mesh.local import LocalMesh
from xchat.v1 import mailbox_pb2, mailbox_pb2_grpc, relay_pb2

# The SDK's documented receive limit (xchat.client._transport CHANNEL_OPTIONS).
SDK_RECEIVE_LIMIT = 4 * 1024 * 1024
MAX_CIPHERTEXT = 128 * 1024


def _name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def _stuff(sender, recipient: str, count: int, size: int) -> list[bytes]:
    """``count`` junk envelopes of ``size`` bytes from ``sender`` (a stranger) to ``recipient``."""
    ids = [secrets.token_bytes(16) for _ in range(count)]

    async def batches():
        for start in range(0, count, 4):
            yield relay_pb2.SendBatch(
                envelopes=[
                    relay_pb2.SendRequest(recipient_device_id=recipient, message_id=mid, ciphertext=secrets.token_bytes(size))
                    for mid in ids[start : start + 4]
                ]
            )

    async for result in sender.relay.SendStream(batches(), metadata=sender.md):
        assert all(r.error_code == 0 for r in result.results), result
    return ids


def test_one_maximal_envelope_fits_a_response_well_below_the_sdk_limit() -> None:
    assert MAX_CIPHERTEXT + 1024 < MAX_RESPONSE_BYTES <= SDK_RECEIVE_LIMIT // 2


async def test_forty_maximal_envelopes_from_a_stranger_are_all_delivered(mesh: LocalMesh, connect) -> None:
    stranger, victim = await connect("a"), await connect("b")
    ids = await _stuff(stranger, victim.device_id, 40, MAX_CIPHERTEXT)
    # A channel with exactly the SDK's receive limit.
    async with grpc.aio.insecure_channel(
        mesh.regions["b"].endpoint, options=[("grpc.max_receive_message_length", SDK_RECEIVE_LIMIT)]
    ) as channel:

        async def opener():
            yield mailbox_pb2.SyncRequest()

        call = mailbox_pb2_grpc.MailboxStub(channel).Sync(opener(), metadata=victim.md)
        got: list[bytes] = []

        async def backlog() -> None:
            # Until all forty arrived: region b's replica may still lag the stranger's writes in
            # region a when the backlog ends, and the rest then follow on their wake-ups.
            async for response in call:
                assert response.ByteSize() <= MAX_RESPONSE_BYTES
                got.extend(e.message_id for e in response.envelopes)
                if set(got) >= set(ids):
                    return

        await asyncio.wait_for(backlog(), 30)
        call.cancel()
    # Relay stores one batch's envelopes concurrently: compare as sets.
    assert len(got) == len(ids) and set(got) == set(ids)


async def test_a_hundred_60kb_messages_reach_the_app_through_the_sdk(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "bob.db", mesh.endpoints("c")) as bob:
        await bob.register(bob_name)
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice:
        await alice.register(alice_name)
        bodies = [bytes([i]) * 60_000 for i in range(100)]
        for body in bodies:
            await alice.send(bob_name, body, content_type="application/octet-stream")
    async with await Client.open(tmp_path / "bob.db", mesh.endpoints("c")) as bob:
        inbox = bob.messages()
        received = []

        async def drain() -> None:
            async for message in inbox:
                received.append(message.body)
                await bob.ack(message)
                if len(received) == len(bodies):
                    return

        await asyncio.wait_for(drain(), 60)
        await inbox.aclose()
    assert received == bodies


async def test_maximal_junk_from_a_stranger_does_not_stop_the_sdks_message_loop(
    mesh: LocalMesh, connect, tmp_path: Path
) -> None:
    stranger = await connect("a")
    alice_name, bob_name = _name("alice"), _name("bob")
    async with await Client.open(tmp_path / "bob.db", mesh.endpoints("b")) as bob, await Client.open(
        tmp_path / "alice.db", mesh.endpoints("a")
    ) as alice:
        await bob.register(bob_name)
        await alice.register(alice_name)
        await _stuff(stranger, bob.device_id, 40, MAX_CIPHERTEXT)
        await alice.send(bob_name, "after the flood")
        inbox = bob.messages()
        message = await asyncio.wait_for(anext(inbox), 60)
        assert message.text == "after the flood"
        await inbox.aclose()


async def test_the_mailbox_stream_and_every_bucket_are_bounded_in_bytes(mesh: LocalMesh) -> None:
    nc = await nats.connect(mesh.nats_urls("a"))
    try:
        js = nc.jetstream()
        mailbox = await js.stream_info("XCHAT_MAILBOX")
        assert mailbox.config.max_bytes == DEFAULT_MAILBOX_MAX_BYTES
        assert mailbox.config.max_msgs_per_subject == DEFAULT_MAILBOX_QUOTA
        for bucket in ("xchat_accounts", "xchat_devices", "xchat_challenges", "xchat_refresh", "xchat_prekeys"):
            info = await js.stream_info(f"KV_{bucket}")
            assert 0 < (info.config.max_bytes or -1) <= 4 * DEFAULT_BUCKET_MAX_BYTES, bucket
    finally:
        await nc.close()
