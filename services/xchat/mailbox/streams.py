"""SyncStream's acknowledgements: the unary Acks that free a server-streaming call's window.

``Mailbox.SyncStream`` is Sync for clients that cannot stream requests (browsers
through gRPC-web, docs/grpc-web.md): the same delivery loop, window and bounds
(``service``), but the acknowledgements arrive as unary ``Ack`` calls, which
delete in the store on their own (``acks.ack_outside_sync``). What is left for
the streaming call is to learn that its outstanding envelopes are gone, so its
window (``MAX_UNACKED``) opens again:

* an Ack served by this process hands the sequences it acknowledged to every
  SyncStream of the same device here (``AckFeeds.acknowledged``), which drops
  them from its window at once, without a second store operation;
* an Ack served by another mailbox process (another replica or region behind
  the same address) is not seen here: a call whose window stays full re-reads
  its outstanding range from the store every ``FULL_WINDOW_RECHECK_S`` and
  forgets what is gone (one batched read of at most ``MAX_UNACKED`` records).

Feeds are per call and bounded (``FEED_MAX``): past it the oldest pending
notices are dropped and the store re-check covers them.
"""

from __future__ import annotations

import asyncio
import contextlib

from xchat.core.ids import DeviceId
from xchat.core.store import hedge_subject, mailbox_subject
from xchat.mailbox.hedge import HEDGE_SEQUENCE_BASE, DeviceStreams, split
from xchat.mailbox.listeners import Listener
from xchat.mailbox.reader import MailboxReader

# How often a SyncStream whose window is full re-reads its outstanding range
# (seconds): the delay a client whose Acks reach another process sees per full
# window; one batched read each time.
FULL_WINDOW_RECHECK_S = 2.0
# Ack notices queued per call before the oldest are dropped (the re-check covers them).
FEED_MAX = 64


class AckFeeds:
    """The SyncStream calls open in this process, by device, and the Acks meant for them."""

    def __init__(self) -> None:
        self._by_device: dict[DeviceId, set[asyncio.Queue[list[int]]]] = {}

    def open(self, device: DeviceId) -> asyncio.Queue[list[int]]:
        feed: asyncio.Queue[list[int]] = asyncio.Queue(FEED_MAX)
        self._by_device.setdefault(device, set()).add(feed)
        return feed

    def close(self, device: DeviceId, feed: asyncio.Queue[list[int]]) -> None:
        feeds = self._by_device.get(device)
        if feeds is not None:
            feeds.discard(feed)
            if not feeds:
                del self._by_device[device]

    def acknowledged(self, device: DeviceId, sequences: list[int]) -> None:
        """``device`` acknowledged ``sequences`` (deleted in the store) through a unary Ack here."""
        for feed in self._by_device.get(device, ()):
            if feed.full():
                feed.get_nowait()
            feed.put_nowait(sequences)


def forget(window: DeviceStreams, sequences: list[int] | set[int], max_unacked: int) -> bool:
    """Drops acknowledged (wire) ``sequences`` from the call's window; True when that opened room."""
    full = window.outstanding >= max_unacked
    window.forget(sequences)
    return full and window.outstanding < max_unacked


async def still_stored(
    reader: MailboxReader, device: DeviceId, pending: set[int], *, hedge: MailboxReader | None = None
) -> set[int]:
    """Those of ``pending`` (wire sequences) still in the store: one batched read from the
    lowest per stream (the hedge stream's with ``hedge``, ADR 0013), bounded by their count.

    A pending record the bounded read did not reach (undecodable records took
    its place) counts as gone: harmless, since the window only paces delivery;
    nothing is deleted here and an unacknowledged envelope comes back on the
    next call.
    """
    primary, hedged = split(sorted(pending), check=False)
    found: set[int] = set()
    if primary:
        records = await reader.direct_batch(start=min(primary), subject=mailbox_subject(device), limit=len(primary))
        found |= set(primary) & {record.sequence for record in records}
    if hedged and hedge is not None:
        records = await hedge.direct_batch(start=min(hedged), subject=hedge_subject(device), limit=len(hedged))
        found |= {s + HEDGE_SEQUENCE_BASE for s in set(hedged) & {record.sequence for record in records}}
    return found


async def follow_acks(
    feed: asyncio.Queue[list[int]],
    window: DeviceStreams,
    listener: Listener,
    reader: MailboxReader,
    *,
    max_unacked: int,
    hedge: MailboxReader | None = None,
) -> None:
    """Runs beside a SyncStream's delivery: frees its window as its Acks land (here or elsewhere)."""
    try:
        while True:
            sequences: list[int] | None = None
            with contextlib.suppress(asyncio.TimeoutError):
                sequences = await asyncio.wait_for(feed.get(), FULL_WINDOW_RECHECK_S)
            if sequences is not None:
                if forget(window, sequences, max_unacked):
                    listener.wake.set()  # room again: resume delivery
            elif window.outstanding >= max_unacked:
                pending = window.pending
                gone = pending - await still_stored(reader, listener.device, pending, hedge=hedge)
                if forget(window, gone, max_unacked):
                    listener.wake.set()
    except Exception as exc:  # noqa: BLE001 - surfaced by the delivery loop
        listener.end(exc)
