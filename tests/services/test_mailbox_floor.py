"""The acknowledged floor in memory (no network): nothing unacknowledged is ever removed,
everything acknowledged is, and a contiguous run costs one purge.

A fake reader stands in for the store: it holds one device's records and applies
purges and deletes exactly as JetStream would (a purge with a subject filter and
``seq`` removes that subject's records below ``seq``).
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from xchat.core.envelopes import StoredEnvelope
from xchat.core.ids import DeviceId, MessageId
from xchat.mailbox.acks import AckWindow
from xchat.mailbox.reader import Batch, Stored

DEVICE = DeviceId("d1")


class FakeReader:
    def __init__(self, sequences: list[int]) -> None:
        self.stored = set(sequences)
        self.purges: list[int] = []
        self.deleted: list[int] = []

    async def purge_through(self, device: DeviceId, floor: int) -> None:
        self.purges.append(floor)
        self.stored = {s for s in self.stored if s > floor}

    async def delete(self, sequences: list[int]) -> int:
        self.deleted += sequences
        gone = self.stored & set(sequences)
        self.stored -= gone
        return len(gone)

    async def owned(self, device: DeviceId, sequence: int) -> bool:
        return sequence in self.stored


def _batch(sequences: list[int]) -> Batch:
    envelope = StoredEnvelope(MessageId(b"\0" * 16), b"c", 0)
    return Batch([Stored(s, envelope) for s in sequences], [], sequences[-1] if sequences else 0)


def test_in_order_acks_cost_one_purge_per_frame() -> None:
    reader = FakeReader(list(range(1, 257)))
    window = AckWindow(reader, DEVICE, linger_s=0)  # type: ignore[arg-type]
    window.read(_batch(list(range(1, 129))))
    window.read(_batch(list(range(129, 257))))
    asyncio.run(window.settle(list(range(1, 129))))
    asyncio.run(window.settle(list(range(129, 257))))
    assert reader.purges == [128, 256] and reader.deleted == [] and reader.stored == set()


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=60),
    data=st.data(),
)
def test_only_acknowledged_records_are_ever_removed(gaps: list[int], data: st.DataObject) -> None:
    # The device's records at increasing, gapped sequences (others' records sit in the gaps).
    sequences = []
    seq = 0
    for gap in gaps:
        seq += gap
        sequences.append(seq)
    reader = FakeReader(sequences)
    window = AckWindow(reader, DEVICE, linger_s=0)  # type: ignore[arg-type]
    cut = data.draw(st.integers(min_value=0, max_value=len(sequences)))
    window.read(_batch(sequences[:cut]))
    acked: set[int] = set()
    for _ in range(data.draw(st.integers(min_value=1, max_value=5))):
        frame = data.draw(st.lists(st.sampled_from(sequences + [0, seq + 7]), max_size=20))
        asyncio.run(window.settle(frame))
        acked |= set(frame)
        assert set(sequences) - acked <= reader.stored, "an unacknowledged record was removed"
        assert not (reader.stored & acked), "an acknowledged record is still stored"


def test_acks_of_one_linger_cost_one_purge_and_none_is_left_behind() -> None:
    """One ack per frame (one message at a time): the frames of one linger share a purge,
    and acks that arrive while it runs get the next one, without another ack to trigger it."""

    class SlowReader(FakeReader):
        async def purge_through(self, device: DeviceId, floor: int) -> None:
            await asyncio.sleep(0.02)  # acks keep arriving while the store works
            await super().purge_through(device, floor)

    async def scenario() -> tuple[SlowReader, AckWindow]:
        reader = SlowReader(list(range(1, 21)))
        window = AckWindow(reader, DEVICE, linger_s=0.05)  # type: ignore[arg-type]
        purged: list[int] = []
        window.on_purged = purged.append
        window.read(_batch(list(range(1, 21))))
        for seq in range(1, 11):
            await window.settle([seq])
        assert reader.purges == [] and window.outstanding == 10  # the window frees at once, the store later
        await asyncio.sleep(0.06)  # the purge for 1..10 is running
        for seq in range(11, 21):
            await window.settle([seq])
        deadline = asyncio.get_running_loop().time() + 5
        while reader.stored and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert purged == reader.purges
        return reader, window

    reader, window = asyncio.run(scenario())
    assert reader.purges == [10, 20] and reader.deleted == [] and reader.stored == set()
    assert window.purges == 2


def test_a_failed_lingering_purge_ends_the_call_and_removes_nothing_unacknowledged() -> None:
    class FailingReader(FakeReader):
        async def purge_through(self, device: DeviceId, floor: int) -> None:
            raise RuntimeError("store unreachable")

    async def scenario() -> list[Exception]:
        reader = FailingReader([1, 2, 3])
        window = AckWindow(reader, DEVICE, linger_s=0.01)  # type: ignore[arg-type]
        failures: list[Exception] = []
        window.on_failure = failures.append
        window.read(_batch([1, 2, 3]))
        await window.settle([1, 2])
        deadline = asyncio.get_running_loop().time() + 5
        while not failures and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert reader.stored == {1, 2, 3}
        return failures

    assert [str(e) for e in asyncio.run(scenario())] == ["store unreachable"]
