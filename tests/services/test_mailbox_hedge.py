"""The hedge stream seen by mailbox (ADR 0013): merged reads, wire sequences, acks.

Relay writes to ``XCHAT_MAILBOX_HEDGE`` only while the mailbox stream has no
leader; here records are written into both streams directly (as relay would,
with chosen accept times), so merging, naming and acknowledging are tested on
a healthy mesh. ``tests/client/test_client_hedged_writes.py`` kills the
leader's region.
"""

from __future__ import annotations

import asyncio
import secrets

import nats

from xchat.core.envelopes import StoredEnvelope
from xchat.core.ids import MessageId
from xchat.core.permissions import permissions
from xchat.core.store import HEDGE_STREAM, MAILBOX_STREAM, hedge_subject, mailbox_subject
from xchat.mailbox.reader import Batch, Stored
from xchat.mailbox.hedge import HEDGE_SEQUENCE_BASE, merge, split
from xchat.mesh.local import LocalMesh
from xchat.v1 import mailbox_pb2


def _stored(seq: int, stamp: int) -> Stored:
    return Stored(seq, StoredEnvelope(MessageId(secrets.token_bytes(16)), b"c", stamp))


def test_merge_orders_by_accept_time_and_names_hedge_records_above_the_base() -> None:
    primary = Batch([_stored(1, 10), _stored(2, 30)], [], 2)
    hedge = Batch([_stored(1, 20), _stored(2, 40)], [], 2)
    taken_p, taken_h, out = merge(primary, False, hedge, False)
    assert [s.envelope.stored_at_ms for s in out] == [10, 20, 30, 40]
    assert [s.sequence for s in out] == [1, HEDGE_SEQUENCE_BASE + 1, 2, HEDGE_SEQUENCE_BASE + 2]
    assert taken_p.last == 2 and taken_h.last == 2


def test_a_full_batch_bounds_the_other_stream() -> None:
    # The mailbox stream's batch is full: hedge records accepted after its last one wait.
    primary = Batch([_stored(1, 10), _stored(2, 30)], [], 2)
    hedge = Batch([_stored(5, 20), _stored(6, 40)], [], 6)
    taken_p, taken_h, out = merge(primary, True, hedge, False)
    assert [s.envelope.stored_at_ms for s in out] == [10, 20, 30]
    assert taken_h.last == 5 and [s.sequence for s in taken_h.envelopes] == [5]


def test_a_merged_read_never_hands_over_more_than_the_window_allows() -> None:
    """Each stream is read up to the window's room; together they may not exceed it (a loaded relay
    hedges some sends: 1,025 outstanding of 1,000 in a SyncStream test before the cut)."""
    primary = Batch([_stored(1, 10), _stored(2, 30), _stored(3, 50)], [4], 4)
    hedge = Batch([_stored(1, 20), _stored(2, 40), _stored(3, 60)], [], 3)
    taken_p, taken_h, out = merge(primary, False, hedge, False, limit=4)
    assert [s.envelope.stored_at_ms for s in out] == [10, 20, 30, 40]
    # Each window consumes only what went out: the rest comes with the next read.
    assert [s.sequence for s in taken_p.envelopes] == [1, 2] and taken_p.last == 2 and taken_p.undecodable == []
    assert [s.sequence for s in taken_h.envelopes] == [1, 2] and taken_h.last == 2


class _Stream:
    """One stream's records for the device, as a reader returns them (``last``: highest looked at)."""

    def __init__(self, *records: Stored) -> None:
        self.records = list(records)

    async def read_after(self, device: object, cursor: int, limit: int, *, leader_s: float = 0.0) -> Batch:
        found = [r for r in self.records if r.sequence > cursor][:limit]
        return Batch(found, [], found[-1].sequence if found else 0)


async def test_a_lagging_hedge_replica_holds_the_mailbox_stream_back_until_it_shows_the_announced_record() -> None:
    """Relay announced hedge record 5; the replica answering (its leader refused: a meta-leader
    election) does not show it yet: the mailbox stream's newer record must wait, not overtake."""
    from xchat.core.ids import DeviceId
    from xchat.mailbox.hedge import DeviceStreams

    primary, hedge = _Stream(_stored(1, 30)), _Stream()
    window = DeviceStreams(primary, hedge, DeviceId("dev-bob"), linger_s=0)  # type: ignore[arg-type]
    envelopes, consumed, _ = await window.read(16, hedge=True, hedge_announced=5)
    assert envelopes == [] and consumed == 0 and window.primary.cursor == 0
    hedge.records.append(_stored(5, 20))  # the replica caught up
    envelopes, _, _ = await window.read(16, hedge=True, hedge_announced=5)
    assert [e.envelope.stored_at_ms for e in envelopes] == [20, 30]
    assert [e.sequence for e in envelopes] == [HEDGE_SEQUENCE_BASE + 5, 1]


def test_split_routes_wire_sequences() -> None:
    assert split([3, HEDGE_SEQUENCE_BASE + 7, 9]) == ([3, 9], [7])


async def _admin(mesh: LocalMesh) -> nats.NATS:
    return await nats.connect(
        servers=mesh.nats_urls("a"), tls=mesh.nats_tls(), connect_timeout=5, **mesh.admin_credentials  # type: ignore[arg-type]
    )


async def _write(js, stream: str, subject: str, stamp: int) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    message_id = secrets.token_bytes(16)
    ack = await js.publish(subject, StoredEnvelope(MessageId(message_id), b"c", stamp).encode(), stream=stream, timeout=5)
    return ack.seq, message_id


async def _read(device, count: int) -> list[mailbox_pb2.Envelope]:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()

    async def opener():  # type: ignore[no-untyped-def]
        yield mailbox_pb2.SyncRequest()
        await stop.wait()

    call = device.mailbox.Sync(opener(), metadata=device.md)
    got: list[mailbox_pb2.Envelope] = []
    try:
        while len(got) < count:
            response = await asyncio.wait_for(call.read(), 10)
            got.extend(response.envelopes)
    finally:
        stop.set()
        call.cancel()
    return got


async def test_a_backlog_spread_over_both_streams_arrives_in_accept_order(connect, mesh: LocalMesh) -> None:
    bob = await connect("b")
    nc = await _admin(mesh)
    try:
        js = nc.jetstream()
        # The mailbox stream holds more than one read batch (128); the hedge
        # stream's records were accepted between its 150th and 160th.
        for i in range(200):
            await _write(js, MAILBOX_STREAM, mailbox_subject(bob.device_id), 1_000_000 + 2 * i)
        for j in range(10):
            await _write(js, HEDGE_STREAM, hedge_subject(bob.device_id), 1_000_300 + 2 * j + 1)
    finally:
        await nc.close()
    got = await _read(bob, 210)
    stamps = [e.stored_at_ms for e in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == 210
    assert sum(e.sequence >= HEDGE_SEQUENCE_BASE for e in got) == 10


async def test_acking_anothers_hedge_sequence_is_ignored_and_the_owner_still_gets_it(connect, mesh: LocalMesh) -> None:
    victim = await connect("a")
    attacker = await connect("c")
    nc = await _admin(mesh)
    try:
        seq, message_id = await _write(nc.jetstream(), HEDGE_STREAM, hedge_subject(victim.device_id), 5)
    finally:
        await nc.close()
    wire = HEDGE_SEQUENCE_BASE + seq
    answer = await attacker.mailbox.Ack(mailbox_pb2.AckRequest(sequences=[wire]), metadata=attacker.md)
    assert answer.deleted == 0
    [envelope] = await _read(victim, 1)
    assert (envelope.sequence, envelope.message_id) == (wire, message_id)
    # The owner's ack of the wire sequence removes it from the hedge stream.
    answer = await victim.mailbox.Ack(mailbox_pb2.AckRequest(sequences=[wire]), metadata=victim.md)
    assert answer.deleted == 1


def test_only_relay_writes_and_only_mailbox_reads_the_hedge_stream() -> None:
    relay, mailbox = permissions("relay").publish, permissions("mailbox").publish
    assert "xchat.mbh.*" in relay and f"$JS.API.DIRECT.GET.{HEDGE_STREAM}" not in relay
    assert f"$JS.API.DIRECT.GET.{HEDGE_STREAM}" in mailbox and "xchat.mbh.*" not in mailbox
    for user in ("auth", "keys"):
        assert not [p for p in permissions(user).publish if "mbh" in p or HEDGE_STREAM in p]
