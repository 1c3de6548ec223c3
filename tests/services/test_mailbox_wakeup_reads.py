"""Reads per wake-up on a live Sync (in memory, no network): one read per fresh wake-up,
none for a stale one, and a wake-up always cuts short whatever the call waits for.

At one message at a time a wake-up often arrives while the read that returns its
envelope is under way; it then names a record the call already holds. Reading
again for it (and then retrying that empty read five times, 10-50 ms apart,
deaf to new wake-ups) cost a direct get per message and delayed the next
message by up to 50 ms (issue 18: p99 at 100 msg/s).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from xchat.core.envelopes import StoredEnvelope
from xchat.core.ids import DeviceId, MessageId
from xchat.mailbox import service as service_module
from xchat.mailbox.hedge import DeviceStreams
from xchat.mailbox.reader import Batch, Stored
from xchat.mailbox.service import MailboxServicer

DEVICE = DeviceId("dev-carol")


@dataclass
class FakeMsg:
    subject: str
    data: bytes


class FakeNats:
    def new_inbox(self) -> str:
        return "_INBOX.fake"

    async def subscribe(self, subject: str, cb: object = None, **_: object) -> None:
        pass


class FakeStore:
    def __init__(self) -> None:
        self.nc = FakeNats()

    cut_off = False

    def on_messages_lost(self, hook: object) -> None:
        pass

    def on_cut_off(self, hook: object) -> None:
        pass

    def troubled_within(self, seconds: float) -> bool:
        return False


class Replica:
    """``DEVICE``'s records, all applied at once; counts reads."""

    def __init__(self) -> None:
        self.sequences: list[int] = []
        self.reads = 0

    async def read_after(self, device: DeviceId, cursor: int, limit: int) -> Batch:
        self.reads += 1
        found = [s for s in self.sequences if s > cursor][:limit]
        envelope = StoredEnvelope(MessageId(b"m" * 16), b"ciphertext", 1)
        return Batch([Stored(s, envelope) for s in found], [], found[-1] if found else 0)


class EmptyReplica:
    """The hedge stream (ADR 0013) with nothing for the device."""

    async def read_after(self, device: DeviceId, cursor: int, limit: int, *, leader_s: float = 0.0) -> Batch:
        return Batch([], [], 0)


def wakeup(sequence: int) -> FakeMsg:
    return FakeMsg(f"xchat.ntf.{DEVICE}", str(sequence).encode())


async def _call(replica: Replica) -> tuple[MailboxServicer, object, object]:
    servicer = MailboxServicer(FakeStore(), None, None, store_timeout_s=1.0)  # type: ignore[arg-type]
    servicer._reader = replica  # type: ignore[assignment]
    listener = await servicer._listeners.add(DEVICE)
    responses = servicer._deliver(DeviceStreams(replica, EmptyReplica(), DEVICE), listener)  # type: ignore[arg-type]
    backlog = await asyncio.wait_for(anext(responses), 1.0)
    assert backlog.HasField("backlog_done")
    return servicer, listener, responses


async def _close(responses: object, pending: asyncio.Future[object] | None) -> None:
    if pending is not None and not pending.done():
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
    await responses.aclose()  # type: ignore[attr-defined]


async def test_a_stale_wakeup_costs_no_read() -> None:
    replica = Replica()
    servicer, listener, responses = await _call(replica)
    pending = None
    try:
        replica.sequences.append(5)
        await servicer._listeners._on_wakeup(wakeup(5))  # type: ignore[arg-type]
        live = await asyncio.wait_for(anext(responses), 1.0)  # type: ignore[call-overload]
        assert [e.sequence for e in live.envelopes] == [5]
        reads = replica.reads
        # The same sequence again (its wake-up arrived while the read above ran).
        await servicer._listeners._on_wakeup(wakeup(5))  # type: ignore[arg-type]
        pending = asyncio.ensure_future(anext(responses))  # type: ignore[call-overload]
        await asyncio.sleep(0.2)  # longer than every lagging retry together (10+20+30+40+50 ms)
        assert replica.reads == reads, "a wake-up for a record already read was read for again"
        replica.sequences.append(9)
        await servicer._listeners._on_wakeup(wakeup(9))  # type: ignore[arg-type]
        live = await asyncio.wait_for(pending, 1.0)
        assert [e.sequence for e in live.envelopes] == [9] and replica.reads == reads + 1
    finally:
        await _close(responses, pending)
        servicer._listeners.remove(listener)  # type: ignore[arg-type]


async def test_a_wakeup_ends_the_wait_between_retries_after_lost_wakeups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "LAGGING_REPLICA_RETRY_S", 5.0)  # a retry wait far longer than the test
    replica = Replica()
    servicer, listener, responses = await _call(replica)
    pending = None
    try:
        pending = asyncio.ensure_future(anext(responses))  # type: ignore[call-overload]
        servicer._listeners.wake_all()  # a NATS reconnect: wake-ups may have been lost
        await asyncio.sleep(0.05)  # the empty read is done; the call waits to retry it
        reads = replica.reads
        replica.sequences.append(3)
        await servicer._listeners._on_wakeup(wakeup(3))  # type: ignore[arg-type]
        live = await asyncio.wait_for(pending, 1.0)
        assert [e.sequence for e in live.envelopes] == [3]
        assert replica.reads == reads + 1
    finally:
        await _close(responses, pending)
        servicer._listeners.remove(listener)  # type: ignore[arg-type]
