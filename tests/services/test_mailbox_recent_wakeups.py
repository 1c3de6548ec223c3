"""A Sync opened just after a send must not miss it on a replica that lags (in memory, no network).

Relay answers a send once a quorum of replicas holds the envelope and wakes
the device at once. A device that opens its Sync right then (the app sent,
then listened) can have its backlog read answered by the third replica before
it applied the write: an empty backlog. The wake-up came before the call, so
only the remembered sequence makes the call read again instead of waiting for
the 20-30 s safety poll (seen in CI: the first receive of
``test_unacked_message_is_redelivered_and_acked_one_never_again`` timed out).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from xchat.core.envelopes import StoredEnvelope
from xchat.core.ids import DeviceId, MessageId
from xchat.mailbox import listeners as listeners_module
from xchat.mailbox.hedge import DeviceStreams
from xchat.mailbox.listeners import Listeners
from xchat.mailbox.reader import Batch, Stored
from xchat.mailbox.service import MailboxServicer

DEVICE = DeviceId("dev-bob")


@dataclass
class FakeMsg:
    subject: str
    data: bytes


class FakeNats:
    def __init__(self) -> None:
        self.subscriptions: list[str] = []

    def new_inbox(self) -> str:
        return "_INBOX.fake"

    async def subscribe(self, subject: str, cb: object = None, **_: object) -> None:
        self.subscriptions.append(subject)


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


class LaggingReplica:
    """Holds ``DEVICE``'s envelope at ``sequence``, but the first ``lag_reads`` reads do not see it yet."""

    def __init__(self, sequence: int, lag_reads: int) -> None:
        self.sequence = sequence
        self.lag_reads = lag_reads
        self.reads = 0

    async def read_after(self, device: DeviceId, cursor: int, limit: int) -> Batch:
        self.reads += 1
        if self.reads <= self.lag_reads or cursor >= self.sequence:
            return Batch([], [], 0)
        envelope = StoredEnvelope(MessageId(b"m" * 16), b"ciphertext", 1)
        return Batch([Stored(self.sequence, envelope)], [], self.sequence)


class EmptyReplica:
    """The hedge stream with nothing for the device."""

    async def read_after(self, device: DeviceId, cursor: int, limit: int, *, leader_s: float = 0.0) -> Batch:
        return Batch([], [], 0)


def wakeup(sequence: int) -> FakeMsg:
    return FakeMsg(f"xchat.ntf.{DEVICE}", str(sequence).encode())


async def test_a_backlog_read_by_a_lagging_replica_is_read_again_not_left_to_the_poll() -> None:
    servicer = MailboxServicer(FakeStore(), None, None, store_timeout_s=1.0)  # type: ignore[arg-type]
    replica = LaggingReplica(sequence=7, lag_reads=1)
    servicer._reader = replica  # type: ignore[assignment]
    # The send was acknowledged and its wake-up arrived before the device's call opened.
    await servicer._listeners._on_wakeup(wakeup(7))  # type: ignore[arg-type]
    listener = await servicer._listeners.add(DEVICE)
    responses = servicer._deliver(DeviceStreams(replica, EmptyReplica(), DEVICE), listener)  # type: ignore[arg-type]
    try:
        backlog = await asyncio.wait_for(anext(responses), 1.0)
        assert backlog.HasField("backlog_done") and backlog.backlog_done.delivered == 0  # the lagging read
        live = await asyncio.wait_for(anext(responses), 2.0)  # not the 20-30 s safety poll
        assert [e.sequence for e in live.envelopes] == [7]
    finally:
        await responses.aclose()
        servicer._listeners.remove(listener)


async def test_the_wakeup_subscription_is_taken_before_any_call() -> None:
    store = FakeStore()
    servicer = MailboxServicer(store, None, None, store_timeout_s=1.0)  # type: ignore[arg-type]
    await servicer.prepare()
    assert store.nc.subscriptions == ["xchat.ntf.*", "xchat.eph.*"]  # wake-ups, and typing and presence signals


async def test_a_remembered_wakeup_is_forgotten_once_acknowledged_or_old(monkeypatch: pytest.MonkeyPatch) -> None:
    listeners = Listeners(FakeStore())  # type: ignore[arg-type]
    await listeners._on_wakeup(wakeup(5))  # type: ignore[arg-type]
    await listeners._on_wakeup(wakeup(3))  # type: ignore[arg-type]
    assert listeners.recently_announced(DEVICE) == 5  # the highest one
    listeners.removed_through(DEVICE, 4)
    assert listeners.recently_announced(DEVICE) == 5
    listeners.removed_through(DEVICE, 5)
    assert listeners.recently_announced(DEVICE) == 0  # purged: nothing to wait for

    monkeypatch.setattr(listeners_module, "RECENT_WAKEUP_S", 0.05)
    await listeners._on_wakeup(wakeup(9))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    assert listeners.recently_announced(DEVICE) == 0
    assert (await listeners.add(DEVICE)).announced == 0


async def test_remembered_wakeups_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listeners_module, "RECENT_WAKEUPS_MAX", 3)
    listeners = Listeners(FakeStore())  # type: ignore[arg-type]
    for i in range(1, 11):
        await listeners._on_wakeup(FakeMsg(f"xchat.ntf.d{i}", str(i).encode()))  # type: ignore[arg-type]
    assert len(listeners._recent) == 3
    assert [listeners.recently_announced(DeviceId(f"d{i}")) for i in (7, 8, 9, 10)] == [0, 8, 9, 10]
