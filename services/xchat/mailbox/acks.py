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
* **Purges are coalesced.** A call's purge waits ``PURGE_LINGER_S`` after the
  first acknowledgement that moved the floor, and then removes everything up
  to the floor *as it is then*: one replicated operation for every
  acknowledgement of that interval. With one message at a time each ack
  arrives in a frame of its own, and a purge per frame was a replicated,
  fsynced Raft operation per message — as costly as storing it (measured in
  ADR 0008's addendum). Nothing changes for the app: the delivery window
  frees at once (``pending`` shrinks on the ack), and an acknowledged envelope
  is still gone within ``PURGE_LINGER_S`` plus one store round trip, also
  after the call ends (the lingering purge runs on). If the process dies in
  between, the envelopes come back on the next call and the SDK, which
  recorded them as seen, only acknowledges them again: exactly once holds.
* **No read receipt.** Acknowledging another device's sequence is answered
  exactly like acknowledging one that holds nothing: ignored, counted 0. The
  ownership test asks the store for *the caller's* first record at or after
  the sequence, so both cases take the same path (issue 17).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from xchat.core.errors import InvalidArgument
from xchat.core.ids import DeviceId
from xchat.mailbox.reader import Batch, MailboxReader

log = logging.getLogger(__name__)

MAX_ACKS_PER_REQUEST = 1000
# How long a call's purge waits for more acknowledgements (seconds): the longest an
# acknowledged envelope stays stored on top of one store round trip. A purge costs the
# three nats-servers ~1.5 ms of CPU, as much as storing a message (measured, sequential
# R3 with sync always): at 100 msg/s to one device, 0.2 s folds ~20 acks into one purge
# (~75 us per message instead of 1.5 ms); a burst is already one frame per response.
PURGE_LINGER_S = 0.2
# Lingering purges of calls that already ended, held here so they are not collected.
_lingering: set[asyncio.Task[None]] = set()
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

    def __init__(self, reader: MailboxReader, device: DeviceId, *, linger_s: float = PURGE_LINGER_S) -> None:
        self._reader = reader
        self._device = device
        # 0: purge inside ``settle`` (one purge per call of it).
        self._linger = linger_s
        self._purging: asyncio.Task[None] | None = None
        # Told the floor after each purge, and a purge's failure (the call then ends).
        self.on_purged: Callable[[int], None] | None = None
        self.on_failure: Callable[[Exception], None] | None = None
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
            if self._linger <= 0:
                await self._purge()
            elif self._purging is None:
                self._purging = asyncio.create_task(self._purge_later())
                _lingering.add(self._purging)
                self._purging.add_done_callback(_lingering.discard)
        if unseen:
            holes += await _owned(self._reader, self._device, unseen)
        if holes:
            await self._reader.delete(holes)
            self.deletes += len(holes)

    async def _purge(self) -> None:
        """Removes everything up to the floor as it is now (acknowledgements since are included)."""
        floor = self._floor()
        if floor <= self._purged:
            return
        await self._reader.purge_through(self._device, floor)
        self._purged = max(self._purged, floor)
        self.purges += 1
        if self.on_purged is not None:
            self.on_purged(self._purged)

    async def _purge_later(self) -> None:
        try:
            # Acknowledgements that arrived during a purge are purged after the next linger.
            while self._floor() > self._purged:
                await asyncio.sleep(self._linger)
                await self._purge()
        except Exception as exc:  # noqa: BLE001 - the call ends; its acks come back and are applied again
            if self.on_failure is not None:
                self.on_failure(exc)
            else:
                log.info("acknowledgements of device %s not applied yet (next call applies them): %s", self._device, exc)
        finally:
            self._purging = None


class RecentRemovals:
    """Sequences acknowledged through this process in the last ``keep_s``, per device.

    An acknowledgement removes records at the stream's leader once a quorum
    applied it; a replica that answers the next read (a new call right after
    the Ack, on a loaded machine) may not have applied it yet and would hand
    the envelopes over again (measured: 1 run in 3 of
    ``tests/services/test_mailbox_syncstream.py`` at machine load ~20, on main
    too). The SDK drops such copies, but a removed envelope must not come back
    at all: reads of this process skip what it removed recently. Bounded:
    ``max_devices`` devices, ``max_per_device`` sequences each (the oldest go).
    """

    def __init__(self, *, keep_s: float = 10.0, max_devices: int = 20_000, max_per_device: int = 4096) -> None:
        self._keep = keep_s
        self._max_devices = max_devices
        self._max_per_device = max_per_device
        self._by_device: OrderedDict[DeviceId, tuple[float, dict[int, None]]] = OrderedDict()

    def add(self, device: DeviceId, sequences: Iterable[int]) -> None:
        now = time.monotonic()
        _, seen = self._by_device.pop(device, (now, {}))
        for s in sequences:
            seen[s] = None
        while len(seen) > self._max_per_device:
            del seen[next(iter(seen))]
        self._by_device[device] = (now, seen)
        while self._by_device:
            oldest, (at, _) = next(iter(self._by_device.items()))
            if now - at < self._keep and len(self._by_device) <= self._max_devices:
                break
            del self._by_device[oldest]

    def of(self, device: DeviceId) -> dict[int, None]:
        """The device's recently removed (wire) sequences (empty when none or too old)."""
        entry = self._by_device.get(device)
        if entry is None or time.monotonic() - entry[0] >= self._keep:
            return {}
        return entry[1]
