"""Acknowledgements: which of a device's envelopes may go, and removing them cheaply.

Two guarantees shape this module:

* **Exactly once, RPO 0.** An envelope leaves the store only after its device
  acknowledged it. A Sync call reads its device's subject in order from
  sequence 0, so every record of that subject at or below the call's cursor is
  known to the call: delivered and not yet acknowledged (``pending``),
  undecodable (``blocked``: never delivered, so never acknowledged), or
  acknowledged. The *floor* is the highest sequence below every pending or
  blocked one and not above the cursor; everything of the device up to it is
  acknowledged, so one ``STREAM.PURGE`` with a subject filter removes it all
  in one replicated operation instead of one delete each (issue 18). An
  acknowledgement above the floor (a hole: an earlier envelope is still
  unacknowledged) is deleted on its own.
* **No read receipt.** Acknowledging another device's sequence is answered
  exactly like acknowledging one that holds nothing: ignored, counted 0. The
  ownership test asks the store for *the caller's* first record at or after
  the sequence, so both cases take the same path (issue 17).
"""

from __future__ import annotations

import asyncio

from xchat.core.errors import InvalidArgument
from xchat.core.ids import DeviceId
from xchat.mailbox.reader import Batch, MailboxReader

MAX_ACKS_PER_REQUEST = 1000
# Concurrent ownership look-ups for one acknowledgement outside Sync.
LOOKUP_CONCURRENCY = 16


def _check_size(sequences: list[int]) -> None:
    if len(sequences) > MAX_ACKS_PER_REQUEST:
        raise InvalidArgument(f"at most {MAX_ACKS_PER_REQUEST} sequences per acknowledgement")


async def _owned(reader: MailboxReader, device: DeviceId, sequences: list[int]) -> list[int]:
    gate = asyncio.Semaphore(LOOKUP_CONCURRENCY)

    async def one(seq: int) -> bool:
        async with gate:
            return await reader.owned(device, seq)

    candidates = sorted({s for s in sequences if s > 0})
    found = await asyncio.gather(*(one(s) for s in candidates))
    return [s for s, mine in zip(candidates, found) if mine]


async def ack_outside_sync(reader: MailboxReader, device: DeviceId, sequences: list[int]) -> int:
    """The unary Ack: deletes those of ``sequences`` that hold the device's envelopes; returns how many."""
    _check_size(sequences)
    return await reader.delete(await _owned(reader, device, sequences))


class AckWindow:
    """The acknowledgement state of one Sync call (see the module docstring)."""

    def __init__(self, reader: MailboxReader, device: DeviceId) -> None:
        self._reader = reader
        self._device = device
        self.pending: set[int] = set()
        self._blocked: set[int] = set()
        self.cursor = 0
        self._purged = 0
        # Replicated store operations issued, for tests and measurements.
        self.purges = 0
        self.deletes = 0

    @property
    def outstanding(self) -> int:
        return len(self.pending)

    @property
    def purged(self) -> int:
        """Every record of the device up to this sequence is removed (0: nothing yet)."""
        return self._purged

    def read(self, batch: Batch) -> None:
        """Records what the call has just read (before it is sent, so acks can never outrun it)."""
        self.cursor = max(self.cursor, batch.last)
        self.pending.update(stored.sequence for stored in batch.envelopes)
        self._blocked.update(batch.undecodable)

    def _floor(self) -> int:
        return min(self.pending | self._blocked | {self.cursor + 1}) - 1

    async def settle(self, sequences: list[int]) -> None:
        """Removes what ``sequences`` acknowledge: one purge up to the floor, deletes for holes."""
        _check_size(sequences)
        acked = {s for s in sequences if s in self.pending}
        # Not read by this call yet (e.g. acks from an earlier call sent first
        # on this one): ownership is checked in the store. At or below the
        # cursor and not pending means already acknowledged, another device's,
        # or nothing: all ignored alike.
        unseen = [s for s in sequences if s > self.cursor]
        self.pending -= acked
        floor = self._floor()
        holes = sorted(s for s in acked if s > floor)
        if floor > self._purged and acked:
            await self._reader.purge_through(self._device, floor)
            self._purged = floor
            self.purges += 1
        if unseen:
            holes += await _owned(self._reader, self._device, unseen)
        if holes:
            await self._reader.delete(holes)
            self.deletes += len(holes)
