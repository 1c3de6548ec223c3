"""Acknowledgements: no read receipt for strangers, one purge for a contiguous run, holes kept.

The read-receipt test failed on the code before this change (a stranger's ack
of someone's envelope answered PERMISSION_DENIED until the recipient acked it,
OK after).
"""

from __future__ import annotations

import asyncio
import secrets

import nats

from xchat.mesh.local import LocalMesh
from xchat.v1 import mailbox_pb2, relay_pb2


def _send(to: str) -> relay_pb2.SendRequest:
    return relay_pb2.SendRequest(recipient_device_id=to, message_id=secrets.token_bytes(16), ciphertext=b"c")


async def _stored(mesh: LocalMesh, device: str) -> list[int]:
    """Sequences stored for ``device`` (read with an admin connection, not through the service)."""
    nc = await nats.connect(mesh.nats_urls("a"))
    try:
        js = nc.jetstream()
        out = []
        seq = 1
        while True:
            try:
                msg = await js.get_msg("XCHAT_MAILBOX", seq=seq, subject=f"xchat.mbx.{device}", next=True)
            except nats.js.errors.NotFoundError:
                return out
            out.append(msg.seq)
            seq = msg.seq + 1
    finally:
        await nc.close()


async def _sent(mesh: LocalMesh, sender, device: str, count: int) -> list[int]:
    """Sends ``count`` envelopes and returns their stream sequences (relay answers only opaque receipts)."""
    before = len(await _stored(mesh, device))
    for _ in range(count):
        await sender.relay.Send(_send(device), metadata=sender.md)
    deadline = asyncio.get_running_loop().time() + 10
    while len(stored := await _stored(mesh, device)) < before + count:
        assert asyncio.get_running_loop().time() < deadline, stored
        await asyncio.sleep(0.05)
    return stored[before:]


async def _eventually_stored(mesh: LocalMesh, device: str, expected: list[int], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await _stored(mesh, device)) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"stored {got}, expected {expected}"
        await asyncio.sleep(0.05)


async def test_acking_a_foreign_sequence_is_answered_like_acking_an_absent_one(mesh: LocalMesh, connect) -> None:
    alice, bob, mallory = await connect("a"), await connect("b"), await connect("c")
    (sequence,) = await _sent(mesh, alice, bob.device_id, 1)
    absent = sequence + 10_000_000

    async def ack(who, sequences) -> int:
        reply = await who.mailbox.Ack(mailbox_pb2.AckRequest(sequences=sequences), metadata=who.md)
        return reply.deleted

    before = (await ack(mallory, [sequence]), await ack(mallory, [absent]))
    assert await ack(bob, [sequence]) == 1, "the recipient's own ack deletes"
    after = (await ack(mallory, [sequence]), await ack(mallory, [absent]))
    assert before == after == (0, 0), "the same answer whether bob has read it or not"

    # Acking on a Sync call: the stranger's call carries on exactly as with nothing acked.
    async def frames():
        yield mailbox_pb2.SyncRequest(ack_sequences=[sequence, absent])

    call = mallory.mailbox.Sync(frames(), metadata=mallory.md)
    first = await asyncio.wait_for(call.read(), 10)
    assert first.HasField("backlog_done") and first.backlog_done.delivered == 0
    call.cancel()


async def test_contiguous_acks_leave_nothing_and_a_hole_stays_until_acked(mesh: LocalMesh, connect) -> None:
    alice, bob = await connect("a"), await connect("b")
    sequences = await _sent(mesh, alice, bob.device_id, 10)
    hole = sequences[4]
    frames: asyncio.Queue[list[int] | None] = asyncio.Queue()

    async def requests():
        yield mailbox_pb2.SyncRequest()
        while (frame := await frames.get()) is not None:
            yield mailbox_pb2.SyncRequest(ack_sequences=frame)

    call = bob.mailbox.Sync(requests(), metadata=bob.md)
    got: list[int] = []
    while len(got) < 10:
        response = await asyncio.wait_for(call.read(), 10)
        got.extend(e.sequence for e in response.envelopes)
    assert got == sequences
    frames.put_nowait(sequences[:4])  # contiguous from the start: one purge
    await _eventually_stored(mesh, bob.device_id, sequences[4:])
    frames.put_nowait(sequences[5:])  # above the hole: deleted one by one, the hole stays
    await _eventually_stored(mesh, bob.device_id, [hole])
    frames.put_nowait(None)
    call.cancel()

    # The unacknowledged envelope comes back on the next call.
    async def opener():
        yield mailbox_pb2.SyncRequest()

    again = bob.mailbox.Sync(opener(), metadata=bob.md)
    delivered: list[int] = []
    while not (response := await asyncio.wait_for(again.read(), 10)).HasField("backlog_done"):
        delivered.extend(e.sequence for e in response.envelopes)
    again.cancel()
    assert hole in delivered
    assert await bob.mailbox.Ack(mailbox_pb2.AckRequest(sequences=[hole]), metadata=bob.md) == mailbox_pb2.AckResponse(deleted=1)
    await _eventually_stored(mesh, bob.device_id, [])


async def test_acks_from_an_earlier_call_sent_first_on_a_new_one_are_applied(mesh: LocalMesh, connect) -> None:
    alice, bob = await connect("a"), await connect("c")
    sequences = await _sent(mesh, alice, bob.device_id, 3)

    async def opener():
        yield mailbox_pb2.SyncRequest(ack_sequences=sequences[:2])

    call = bob.mailbox.Sync(opener(), metadata=bob.md)
    delivered: list[int] = []
    while not (response := await asyncio.wait_for(call.read(), 10)).HasField("backlog_done"):
        delivered.extend(e.sequence for e in response.envelopes)
    call.cancel()
    # A replica that has not applied the deletes yet may still show the acked
    # two (the SDK de-duplicates them); the store itself must not keep them.
    assert sequences[2] in delivered
    await _eventually_stored(mesh, bob.device_id, sequences[2:])


async def test_concurrent_acks_of_one_sequence_all_succeed(mesh: LocalMesh, connect) -> None:
    """Two acks racing for one envelope (an app's unary Ack beside a Sync's lingering purge,
    or two devices' calls): the loser's delete finds the sequence gone, which JetStream
    answers "sequence N not found" (10043). That is an ack already applied, not an outage:
    it answered UNAVAILABLE and the SDK failed over with no fault at all."""
    alice, bob = await connect("a"), await connect("b")
    sequences = await _sent(mesh, alice, bob.device_id, 8)

    async def ack(sequence: int) -> int:
        reply = await bob.mailbox.Ack(mailbox_pb2.AckRequest(sequences=[sequence]), metadata=bob.md)
        return reply.deleted

    # Every sequence acked by four concurrent calls: each passes the ownership check, then deletes.
    deleted = await asyncio.gather(*(ack(s) for s in sequences for _ in range(4)))
    assert sum(deleted) == len(sequences), deleted
    await _eventually_stored(mesh, bob.device_id, [])
