"""Mailbox.SyncStream (server streaming, acks by unary Ack): the Sync that gRPC-web can carry.

Driven through gRPC on the real mesh: backlog then live delivery, acknowledged
envelopes never come back, the window of ``MAX_UNACKED`` reopens when the Acks
land on this process or on another region's, a revoked device's stream ends,
and a foreign or anonymous caller is refused like on Sync.
"""

from __future__ import annotations

import asyncio
import secrets

import grpc
import nacl.signing
import pytest

from xchat.mailbox.service import MAX_UNACKED
from xchat.statements import register_statement
from xchat.v1 import auth_pb2, mailbox_pb2, relay_pb2

# Reads that must arrive; generous for a loaded 2-core CI machine.
READ_TIMEOUT_S = 20.0


def _send(to: str) -> relay_pb2.SendRequest:
    return relay_pb2.SendRequest(recipient_device_id=to, message_id=secrets.token_bytes(16), ciphertext=b"c")


async def _send_many(sender, to: str, count: int) -> None:
    async def batches():
        for start in range(0, count, 100):
            yield relay_pb2.SendBatch(envelopes=[_send(to) for _ in range(min(100, count - start))])

    async for result in sender.relay.SendStream(batches(), metadata=sender.md):
        assert all(r.error_code == 0 for r in result.results), result


async def _read_until_backlog_done(call) -> list[mailbox_pb2.Envelope]:
    got: list[mailbox_pb2.Envelope] = []
    while True:
        response = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
        assert response is not grpc.aio.EOF, "the stream ended before its backlog"
        got.extend(response.envelopes)
        if response.HasField("backlog_done"):
            return got


async def _read_envelopes(call, count: int) -> list[mailbox_pb2.Envelope]:
    got: list[mailbox_pb2.Envelope] = []
    while len(got) < count:
        response = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
        assert response is not grpc.aio.EOF
        got.extend(response.envelopes)
    return got


async def test_syncstream_delivers_backlog_then_live_and_acked_envelopes_never_return(connect) -> None:
    alice, bob = await connect("a"), await connect("b")
    await _send_many(bob, alice.device_id, 3)
    call = alice.mailbox.SyncStream(mailbox_pb2.SyncRequest(), metadata=alice.md)
    try:
        backlog = await _read_until_backlog_done(call)
        assert len(backlog) == 3
        await bob.relay.Send(_send(alice.device_id), metadata=bob.md)
        live = await _read_envelopes(call, 1)
        acked = await alice.mailbox.Ack(
            mailbox_pb2.AckRequest(sequences=[e.sequence for e in backlog + live]), metadata=alice.md
        )
        assert acked.deleted == 4
    finally:
        call.cancel()
    again = alice.mailbox.SyncStream(mailbox_pb2.SyncRequest(), metadata=alice.md)
    try:
        assert await _read_until_backlog_done(again) == []
    finally:
        again.cancel()


async def test_unacked_envelopes_come_back_on_the_next_syncstream(connect) -> None:
    alice, bob = await connect("a"), await connect("b")
    await _send_many(bob, alice.device_id, 2)
    first = alice.mailbox.SyncStream(mailbox_pb2.SyncRequest(), metadata=alice.md)
    try:
        seen = await _read_until_backlog_done(first)
    finally:
        first.cancel()
    second = alice.mailbox.SyncStream(mailbox_pb2.SyncRequest(), metadata=alice.md)
    try:
        assert [e.message_id for e in await _read_until_backlog_done(second)] == [e.message_id for e in seen]
    finally:
        second.cancel()


@pytest.mark.parametrize("ack_region", ["a", "b"], ids=["acks-on-this-process", "acks-on-another-region"])
async def test_a_full_window_reopens_when_unary_acks_land_here_or_elsewhere(connect, ack_region: str) -> None:
    """MAX_UNACKED outstanding stops delivery; Acks (here: forwarded; elsewhere: the store re-check) resume it.

    Fails without ``streams.follow_acks``: the window never reopens and the
    last envelopes never arrive.
    """
    alice, bob = await connect("a"), await connect("b")
    extra = 5
    await _send_many(bob, alice.device_id, MAX_UNACKED + extra)
    acker = alice if ack_region == "a" else await connect(ack_region, alice.account, register=False)
    if acker is not alice:
        acker.device_id, acker.token = alice.device_id, alice.token
    call = alice.mailbox.SyncStream(mailbox_pb2.SyncRequest(), metadata=alice.md)
    try:
        first = await _read_envelopes(call, MAX_UNACKED)
        assert len(first) == MAX_UNACKED  # the window holds the rest back
        for start in range(0, MAX_UNACKED, 1000):
            await acker.mailbox.Ack(
                mailbox_pb2.AckRequest(sequences=[e.sequence for e in first[start : start + 1000]]), metadata=acker.md
            )
        rest = await _read_envelopes(call, extra)
        assert len(rest) == extra and not {e.sequence for e in rest} & {e.sequence for e in first}
    finally:
        call.cancel()


async def test_a_revoked_devices_syncstream_ends_with_permission_denied(connect) -> None:
    owner = await connect("a")
    key = nacl.signing.SigningKey.generate()
    ik = bytes(key.verify_key)
    stolen = await connect("a", owner.account, register=False)
    stolen.key = key
    stolen.device_id = (
        await owner.auth.AddDevice(
            auth_pb2.AddDeviceRequest(identity_key=ik, signature=key.sign(register_statement(owner.account, ik)).signature),
            metadata=owner.md,
        )
    ).device_id
    await stolen.login()
    call = stolen.mailbox.SyncStream(mailbox_pb2.SyncRequest(), metadata=stolen.md)
    await _read_until_backlog_done(call)
    await owner.auth.RevokeDevice(auth_pb2.RevokeDeviceRequest(device_id=stolen.device_id), metadata=owner.md)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while True:
            await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_another_devices_mailbox_and_anonymous_callers_are_refused(connect) -> None:
    alice, mallory = await connect("a"), await connect("a")
    foreign = mallory.mailbox.SyncStream(mailbox_pb2.SyncRequest(device_id=alice.device_id), metadata=mallory.md)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(foreign.read(), READ_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "cannot read the mailbox" in (err.value.details() or "")
    anonymous = mallory.mailbox.SyncStream(mailbox_pb2.SyncRequest(device_id=alice.device_id))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(anonymous.read(), READ_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
