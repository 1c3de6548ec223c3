"""One device's mailbox across its two streams: the mailbox stream and the hedge stream (ADR 0013).

Relay writes an envelope to the hedge stream only when the mailbox stream has
no leader (``xchat.relay.sending``): during an election, a few seconds. A Sync
call reads both, each stream with its own cursor and acknowledged floor
(``AckWindow``), and merges them by relay's accept time (``stored_at_ms``,
strictly increasing per relay process, and stamped in a recipient's publish
order), so a conversation that moved from one stream to the other and back
reaches the device in its order. A read that filled its batch on one stream
only delivers the other stream's records up to the last accept time it saw
(the rest waits for the next read), so a backlog is merged, not concatenated.

Wire sequences: a hedge record is named by its hedge-stream sequence plus
``HEDGE_SEQUENCE_BASE`` (2^48; JetStream sequences stay far below it), so the
SDK's acks and cursors need no new field and old SDKs work unchanged.

The hedge stream is read at the start of a call, after a hedge wake-up,
while its last read found something, and on the safety poll; otherwise a read
costs what it cost before (one direct get).

Order against a lagging replica: a replica answering direct gets may not yet
hold a hedge record (a region thawed or restarted a moment ago: measured, it
answers from its stale view), and a merge without it would let newer
mailbox-stream records overtake it. So hedge reads ask the hedge stream's
leader first (it holds every acknowledged record), any replica only when the
leader does not answer (its own region is down).

Acknowledgements a stream cannot apply now (its leader is being elected) do
not end the call: the envelopes stay stored, come back in a later backlog and
are acknowledged again (the SDK's seen-set keeps them from the app), so
delivery is never held up by a store that cannot delete.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable

from xchat.core.envelopes import StoredEnvelope
from xchat.core.ids import DeviceId
from xchat.core.errors import InvalidArgument, Unavailable
from xchat.mailbox.acks import MAX_ACKS_PER_REQUEST, PURGE_LINGER_S, AckWindow, RecentRemovals, ack_outside_sync
from xchat.mailbox.reader import Batch, MailboxReader, Stored

log = logging.getLogger(__name__)

HEDGE_SEQUENCE_BASE = 1 << 48
# Hedge reads ask the hedge stream's leader first (per record, seconds), then any
# replica: a replica just thawed or restarted answers from a stale view, and the
# hedge is read rarely (ADR 0013). 0.5 s timed out on a machine at load 57 and the
# stale fallback reordered a backlog; a dead hedge leader costs this once per read.
HEDGE_LEADER_READ_S = 1.0
# ... except on a call's first read, which is its first answer: the SDK gives a new call
# 1 s for it and moves on. On kind, a region-kill that took the hedge leader stalled the
# killed region's users 5-7 s (3 runs of 5; under 1 s in the others): every region they
# tried waited 1 s for the dead leader, and the SDK left each in turn. A stale replica's
# view is safe here: a hedged record it lacks is read by a later read (``Store.trouble_at``
# makes every read include the hedge stream after a fault), and the SDK puts a sender's
# messages back in order (ADR 0018).
HEDGE_FIRST_LEADER_READ_S = 0.3
# A mailbox-stream record accepted this long (ms) after the last one this call
# delivered makes the call ask the hedge stream's leader first: the pause may be an
# outage whose hedged envelopes' wake-ups this process never got (a partition).
# Costs one leader request per resumption after a pause of a device's traffic.
HEDGE_GAP_MS = 1000
# After the hedge stream's leader left one of a call's reads unanswered, that call's reads
# go to a replica for this long (seconds) instead of waiting for the leader again: the
# read that follows is usually the catch-up for an announced record, and waiting another
# second for the dead leader made a 2.0-2.1 s delivery stall in 3 flapping runs of 5.
# Per call, not per process: a process-wide memory (tried first) sends every read of a
# loaded machine to replicas once the leader has been slow, and with it the partition
# drill's backlog devices got hedged records after newer ones (15 reorders in 2 runs of
# 5, against 5 in 1 run of 5 before): a replica's view is the reorder risk ADR 0013 names.
HEDGE_LEADER_RETRY_S = 2.0

Record = tuple[int, StoredEnvelope | None]


def split(sequences: list[int], *, check: bool = True) -> tuple[list[int], list[int]]:
    """Wire sequences as (mailbox stream sequences, hedge stream sequences)."""
    if check and len(sequences) > MAX_ACKS_PER_REQUEST:
        raise InvalidArgument(f"at most {MAX_ACKS_PER_REQUEST} sequences per acknowledgement")
    primary: list[int] = []
    hedge: list[int] = []
    for s in sequences:
        if s >= HEDGE_SEQUENCE_BASE:
            hedge.append(s - HEDGE_SEQUENCE_BASE)
        else:
            primary.append(s)
    return primary, hedge


def _records(batch: Batch) -> list[Record]:
    out: list[Record] = [(s.sequence, s.envelope) for s in batch.envelopes]
    out += [(seq, None) for seq in batch.undecodable]
    return sorted(out, key=lambda r: r[0])


def _last_stamp(records: list[Record]) -> float:
    stamps = [e.stored_at_ms for _, e in records if e is not None]
    return float(stamps[-1]) if stamps else math.inf


def _prefix(records: list[Record], horizon: float) -> int:
    """How many records from the front may go: up to the first one accepted after ``horizon``."""
    for i, (_, envelope) in enumerate(records):
        if envelope is not None and envelope.stored_at_ms > horizon:
            return i
    return len(records)


def _consumed(records: list[Record]) -> Batch:
    envelopes = [Stored(seq, e) for seq, e in records if e is not None]
    return Batch(envelopes, [seq for seq, e in records if e is None], records[-1][0] if records else 0)


def _cut(records: list[Record], envelopes: int) -> list[Record]:
    """The front of ``records`` holding ``envelopes`` decodable ones (and the undecodable ones among them)."""
    out: list[Record] = []
    for record in records:
        if record[1] is not None:
            if envelopes == 0:
                break
            envelopes -= 1
        out.append(record)
    return out


def merge(
    primary: Batch, primary_full: bool, hedge: Batch, hedge_full: bool, limit: int | None = None
) -> tuple[Batch, Batch, list[Stored]]:
    """What each stream's window consumes, and the envelopes in delivery order (hedge under wire sequences).

    A stream whose read filled its batch bounds the other: records accepted
    after its last one wait for the next read. At most ``limit`` envelopes
    together (each stream was read up to ``limit``): the rest wait too, so the
    call's window of unacknowledged envelopes holds.
    """
    p, h = _records(primary), _records(hedge)
    horizon = min(_last_stamp(p) if primary_full else math.inf, _last_stamp(h) if hedge_full else math.inf)
    taken_p, taken_h = p[: _prefix(p, horizon)], h[: _prefix(h, horizon)]
    if not taken_p and not taken_h:  # out-of-order stamps within one stream: progress first
        taken_p, taken_h = p, h
    ordered = list(
        heapq.merge(
            ((e.stored_at_ms, False, Stored(seq, e)) for seq, e in taken_p if e is not None),
            ((e.stored_at_ms, True, Stored(seq + HEDGE_SEQUENCE_BASE, e)) for seq, e in taken_h if e is not None),
            key=lambda item: item[0],
        )
    )
    if limit is not None and len(ordered) > limit:
        ordered = ordered[:limit]
        hedged = sum(1 for _, in_hedge, _ in ordered if in_hedge)
        taken_p, taken_h = _cut(taken_p, len(ordered) - hedged), _cut(taken_h, hedged)
    return _consumed(taken_p), _consumed(taken_h), [stored for _, _, stored in ordered]


class DeviceStreams:
    """The read and acknowledgement state of one Sync call over both streams.

    Shaped like ``AckWindow`` where the delivery loop and SyncStream's ack feed
    use it (``outstanding``, ``cursor``, ``pending``, ``settle``, ``forget``),
    with wire sequences throughout.
    """

    def __init__(
        self,
        primary: MailboxReader,
        hedge: MailboxReader,
        device: DeviceId,
        *,
        linger_s: float = PURGE_LINGER_S,
        removals: RecentRemovals | None = None,
    ) -> None:
        self._readers = (primary, hedge)
        self._device = device
        # Acknowledged through this process lately: a lagging replica's copies are skipped.
        self._removals = removals
        self.primary = AckWindow(primary, device, linger_s=linger_s)
        self.hedge = AckWindow(hedge, device, linger_s=linger_s)
        # A lingering purge that failed (no leader) defers, never ends the call:
        # the envelopes come back in a later backlog and are acknowledged again.
        self.primary.on_failure = self._deferred
        self.hedge.on_failure = self._deferred
        # Read the hedge stream on the next read (the call's first read: its backlog).
        self._hedge_due = True
        self._first_read = True
        # Acknowledgements the store could not apply (they come back in a later backlog).
        self.deferred_acks = 0
        # Told when an acknowledgement is deferred (the store could not apply it).
        self.on_deferred: Callable[[], None] | None = None
        # The newest accept time delivered by this call (ms).
        self._last_stamp = 0
        # Loop time until which hedge reads skip the leader (``HEDGE_LEADER_RETRY_S``).
        self._hedge_replica_until = 0.0

    @property
    def outstanding(self) -> int:
        return self.primary.outstanding + self.hedge.outstanding

    @property
    def cursor(self) -> int:
        """The mailbox stream's cursor (the hedge stream's is ``hedge.cursor``)."""
        return self.primary.cursor

    def report_purges(self, primary: Callable[[int], None], hedge: Callable[[int], None]) -> None:
        """Tells ``primary``/``hedge`` each stream's floor after its purges."""
        self.primary.on_purged = primary
        self.hedge.on_purged = hedge

    def _deferred(self, exc: Exception) -> None:
        self.deferred_acks += 1
        log.info("acknowledgements of device %s deferred (%s): the next backlog brings them again", self._device, exc)
        if self.on_deferred is not None:
            self.on_deferred()

    def forget(self, sequences: list[int] | set[int]) -> None:
        """Drops acknowledged wire ``sequences`` from the windows (acknowledged by a unary Ack)."""
        primary, hedge = split(list(sequences), check=False)
        self.primary.pending.difference_update(primary)
        self.hedge.pending.difference_update(hedge)

    @property
    def pending(self) -> set[int]:
        """Outstanding wire sequences (a copy)."""
        return self.primary.pending | {s + HEDGE_SEQUENCE_BASE for s in self.hedge.pending}

    async def settle(self, sequences: list[int]) -> None:
        primary, hedge = split(sequences)
        if hedge:
            await asyncio.gather(self._settle(self.primary, primary), self._settle(self.hedge, hedge))
        else:
            await self._settle(self.primary, primary)

    async def _settle(self, window: AckWindow, sequences: list[int]) -> None:
        try:
            await window.settle(sequences)
            if self._removals is not None and sequences:
                base = HEDGE_SEQUENCE_BASE if window is self.hedge else 0
                self._removals.add(self._device, (s + base for s in sequences))
        except Unavailable as exc:
            # No leader to delete with: the envelopes stay and are acknowledged again later.
            self.deferred_acks += len(sequences)
            log.info("acknowledgement deferred (%s): %d sequence(s)", exc, len(sequences))
            if self.on_deferred is not None:
                self.on_deferred()

    async def read(self, limit: int, *, hedge: bool = False, hedge_announced: int = 0) -> tuple[list[Stored], int, bool]:
        """The next envelopes in delivery order, how many records (decodable or not) were
        consumed, and whether more may follow at once (a stream's read filled its batch).

        ``hedge``: read the hedge stream too (a hedge wake-up, a poll); it is
        also read while the previous hedge read found something.

        ``hedge_announced``: the highest hedge sequence relay's wake-ups named for the
        device. A hedge read that did not reach it came from a replica that lags (the
        leader did not answer: during a meta-leader election every JetStream API request
        is refused, so reads fall back to direct gets): the mailbox stream's records wait
        (the caller's catch-up reads again, within its bound) rather than overtake a hedged
        envelope that is known to exist.
        """
        primary_reader, hedge_reader = self._readers
        read_hedge = hedge or self._hedge_due
        loop = asyncio.get_running_loop()
        leader_s = HEDGE_FIRST_LEADER_READ_S if self._first_read else HEDGE_LEADER_READ_S
        if loop.time() < self._hedge_replica_until:
            leader_s = 0.0  # its leader just failed this call: a replica, with the announced-record check below
        self._first_read = False
        if read_hedge:
            p, h = await asyncio.gather(
                primary_reader.read_after(self._device, self.primary.cursor, limit),
                hedge_reader.read_after(self._device, self.hedge.cursor, limit, leader_s=leader_s),
            )
        else:
            p, h = await primary_reader.read_after(self._device, self.primary.cursor, limit), Batch([], [], 0)
            if p.envelopes and p.envelopes[0].envelope.stored_at_ms - self._last_stamp > HEDGE_GAP_MS:
                # A pause before this record: writes may have gone to the hedge stream
                # meanwhile with their wake-ups lost (a partition); ask its leader first.
                read_hedge = True
                h = await hedge_reader.read_after(self._device, self.hedge.cursor, limit, leader_s=HEDGE_LEADER_READ_S)
        if h.leader_failed:
            self._hedge_replica_until = loop.time() + HEDGE_LEADER_RETRY_S
        if read_hedge and hedge_announced > max(self.hedge.cursor, h.last):
            p = Batch([], [], 0)  # read again once the hedge stream's replica has caught up
        primary_full = len(p.envelopes) + len(p.undecodable) >= limit
        hedge_full = len(h.envelopes) + len(h.undecodable) >= limit
        taken_p, taken_h, envelopes = merge(p, primary_full, h, hedge_full, limit)
        consumed = sum(len(t.envelopes) + len(t.undecodable) for t in (taken_p, taken_h))
        if self._removals is not None and (removed := self._removals.of(self._device)):
            # A replica that has not applied a recent acknowledgement yet: its copies are
            # consumed (the cursor passes them) but neither sent again nor pending.
            taken_p = Batch([e for e in taken_p.envelopes if e.sequence not in removed], taken_p.undecodable, taken_p.last)
            taken_h = Batch(
                [e for e in taken_h.envelopes if e.sequence + HEDGE_SEQUENCE_BASE not in removed], taken_h.undecodable, taken_h.last
            )
            envelopes = [e for e in envelopes if e.sequence not in removed]
        # Recorded before sending, so an ack can never arrive for a sequence a window does not know.
        self.primary.read(taken_p)
        self.hedge.read(taken_h)
        if envelopes:
            self._last_stamp = max(self._last_stamp, max(e.envelope.stored_at_ms for e in envelopes))
        # More may follow while the hedge stream answers with records (taken now or left for later).
        self._hedge_due = read_hedge and bool(h.envelopes or h.undecodable)
        read = sum(len(b.envelopes) + len(b.undecodable) for b in (p, h))
        return envelopes, consumed, primary_full or hedge_full or consumed < read


async def ack_both(primary: MailboxReader, hedge: MailboxReader, device: DeviceId, sequences: list[int]) -> int:
    """The unary Ack over both streams (wire sequences); returns how many envelopes went."""
    p, h = split(sequences)
    deleted = await ack_outside_sync(primary, device, p) if p else 0
    if h:
        deleted += await ack_outside_sync(hedge, device, h)
    return deleted
