"""Per-session order to the app: messages whose predecessors have not arrived wait, bounded.

The servers can store one sender device's envelopes to us out of order in rare
failover cases (ADR 0018). The Double Ratchet tells exactly which predecessors
of a message are missing (``ratchet.Gaps``: the skipped slots ahead of it), so
the receive path (``_receiving``) hands every committed message to
``Reorder.arrived`` in batch order, and gets back what the app may see now:

- a message with no missing predecessors goes at once, after every held
  message of its session that it proves complete;
- a message with missing predecessors is held (already committed: durable,
  ratchet advanced, unacknowledged) in its session's list: a message that
  filled a gap goes before the first held one that waited for it, any other
  at the end;
- the front of a session's list is released while its missing slots are all
  consumed, or once its hold deadline passed (the newest missing slot's
  skip time plus the window: a predecessor that never comes, e.g. expired or
  refused at the sender, delays later messages only that long), or when the
  session holds more than ``max_held``.

Holds live in memory only. After a restart the mailbox redelivers every
unacknowledged envelope and the receive path hands committed ones over from
the inbox as before: nothing is lost or shown twice, but order across a
crash is best effort. A redelivered copy of a held message is dropped by the
receive path (``holds``): the held one is handed over when released.

Cost: with nothing held and no gaps reported, ``arrived`` is one emptiness
check per message.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from xchat.client.crypto.ratchet import Gaps, Slot
from xchat.client.messages import Message, OrderGap

log = logging.getLogger(__name__)

# How long a missing predecessor is waited for. Out-of-order storage comes from
# a failover mid-pipeline: the earlier envelope is committed by another region
# within one relay retry budget (a few seconds), so 10 s covers it with margin,
# while a predecessor that never comes costs a later message at most 10 s.
DEFAULT_REORDER_WINDOW_S = 10.0
# Held messages per session beyond which the front is released regardless:
# a sender that skips far ahead holds at most this many of its own messages.
DEFAULT_MAX_HELD = 256
# Held messages across all sessions: they stay unacknowledged, and the mailbox delivers
# at most 1,000 unacknowledged envelopes per Sync (mailbox MAX_UNACKED); beyond this the
# largest session's front is released, so holds never stall the stream for other senders.
DEFAULT_MAX_HELD_TOTAL = 512
# Positions of messages refused after they decrypted (forged certificate, unlisted device, ...),
# remembered per sender device and for so many devices: later messages do not wait for them.
REFUSED_PER_DEVICE = 64
REFUSED_DEVICES = 1024


@dataclass(slots=True)
class _Held:
    message: Message
    slot: Slot
    # The predecessors it waits for (shared between held messages that recorded the same
    # ones: a sender that skips far ahead costs one set, not one per held message).
    missing: frozenset[Slot]
    deadline_ms: int


@dataclass(slots=True)
class _Session:
    """One sender device's held messages, in release order."""

    held: list[_Held] = field(default_factory=list)
    # Slots some held message waits for and not known gone: a slot consumed is struck
    # here only (O(1)); a held message is complete when its set and this are disjoint.
    outstanding: set[Slot] = field(default_factory=set)
    # The last reported missing tuple and its set (shared by equal reports).
    last: tuple[tuple[Slot, ...], frozenset[Slot]] = ((), frozenset())

    def waits(self, entry: _Held) -> bool:
        return not self.outstanding.isdisjoint(entry.missing)

    def missing_set(self, missing: tuple[Slot, ...]) -> frozenset[Slot]:
        if missing != self.last[0]:
            self.last = (missing, frozenset(missing))
        return self.last[1]


# One committed message of a batch: (sender device, message for the app or None for a
# control payload, its gaps). A device of None: a redelivered copy, handed over as is.
Arrival = tuple[str | None, Message | None, Gaps | None]


class Reorder:
    """Held messages per sender device, released in order (see the module docstring)."""

    def __init__(
        self, *, window_s: float = DEFAULT_REORDER_WINDOW_S, max_held: int = DEFAULT_MAX_HELD,
        max_held_total: int = DEFAULT_MAX_HELD_TOTAL,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        on_gap: Callable[[OrderGap], None] = lambda event: None,
    ) -> None:
        self.window_ms = int(window_s * 1000)
        self.max_held = max_held
        self.max_held_total = max_held_total
        # Must be the clock the ratchet dates skipped keys with (wall clock, ms).
        self._clock_ms = clock_ms
        # Told of every message released with predecessors still missing (``Client.events()``).
        self._on_gap = on_gap
        self._sessions: dict[str, _Session] = {}
        self._ids: set[bytes] = set()
        self._refused: OrderedDict[str, OrderedDict[Slot, None]] = OrderedDict()
        # Released with predecessors still missing (for tests and metrics).
        self.released_incomplete = 0

    def holds(self, message_id: bytes) -> bool:
        return bool(self._ids) and message_id in self._ids

    def refused(self, device: str, slot: Slot) -> None:
        """A message of ``device`` at ``slot`` was refused after it decrypted: nobody waits for it.

        Its key is not kept (the refusal rolled its ratchet step back), so the next message
        reports the slot as skipped; without this, every refusal would hold the sender's
        later messages for the whole window.
        """
        slots = self._refused.pop(device, None) or OrderedDict()
        slots[slot] = None
        while len(slots) > REFUSED_PER_DEVICE:
            slots.popitem(last=False)
        self._refused[device] = slots
        while len(self._refused) > REFUSED_DEVICES:
            self._refused.popitem(last=False)
        session = self._sessions.get(device)
        if session is not None:
            session.outstanding.discard(slot)  # released by the next ``arrived`` or ``due``

    def _without_refused(self, device: str, gaps: Gaps | None) -> Gaps | None:
        slots = self._refused.get(device) if gaps is not None and self._refused else None
        if gaps is None or not slots or not any(s in slots for s in gaps.missing):
            return gaps
        return dataclasses.replace(gaps, missing=tuple(s for s in gaps.missing if s not in slots))

    def arrived(self, arrivals: Iterable[Arrival]) -> list[Message]:
        """What the app may see now, in order, given a committed batch's messages in batch order."""
        out: list[Message] = []
        for device, message, gaps in arrivals:
            if device is not None:
                gaps = self._without_refused(device, gaps)
            if gaps is None and (device is None or not self._sessions or device not in self._sessions):
                if message is not None:
                    out.append(message)  # the common case
                continue
            assert device is not None
            self._arrive(device, message, gaps, out)
        if self._sessions:
            out.extend(self.due())
            while len(self._ids) > self.max_held_total:
                device = max(self._sessions, key=lambda d: len(self._sessions[d].held))
                self._release(device, out, force=1)
        return out

    def _arrive(self, device: str, message: Message | None, gaps: Gaps | None, out: list[Message]) -> None:
        session = self._sessions.get(device) or _Session()
        if gaps is not None and gaps.filled:
            # It was a missing predecessor: it goes before the first held message that waited for it.
            held = session.held
            at = next((i for i, other in enumerate(held) if gaps.slot in other.missing), len(held))
            session.outstanding.discard(gaps.slot)
            if message is not None and gaps.missing:
                self._hold(device, session, message, gaps, at)
            elif message is not None:
                out.append(message)
            self._release(device, out)
            return
        # Decrypted with a chain key: newer than everything held, and its gaps are the
        # session's whole recent skipped set, so a slot outside it is gone (consumed,
        # evicted or expired).
        if gaps is None:
            session.outstanding.clear()
        else:
            session.outstanding.intersection_update(gaps.missing)
        self._release(device, out)
        if message is None:
            return
        if gaps is None or not gaps.missing:
            out.append(message)
            return
        session = self._sessions.get(device) or _Session()
        self._hold(device, session, message, gaps, len(session.held))
        self._release(device, out)

    def _hold(self, device: str, session: _Session, message: Message, gaps: Gaps, at: int) -> None:
        self._sessions[device] = session
        missing = session.missing_set(gaps.missing)
        session.outstanding.update(missing)
        session.held.insert(at, _Held(message, gaps.slot, missing, gaps.newest_ms + self.window_ms))
        self._ids.add(message.message_id)

    def _release(self, device: str, out: list[Message], *, force: int = 0) -> None:
        """Releases the front of ``device``'s list while it is complete, overdue or over the count bound."""
        session = self._sessions.get(device)
        if session is None:
            return
        held = session.held
        now = self._clock_ms()
        while held and (
            force > 0 or len(held) > self.max_held or not session.waits(held[0]) or held[0].deadline_ms <= now
        ):
            force -= 1
            entry = held.pop(0)
            if session.waits(entry):
                self.released_incomplete += 1
                missing = len(session.outstanding & entry.missing)
                log.info(
                    "message %s from device %s released without %d earlier message(s) of its session",
                    entry.message.message_id.hex(), device, missing,
                )
                self._on_gap(OrderGap(entry.message.sender_account, device, entry.message.message_id, missing))
            self._ids.discard(entry.message.message_id)
            out.append(entry.message)
        if not held:
            del self._sessions[device]

    def due(self) -> list[Message]:
        """Held messages whose wait is over (by completion or deadline), in order per session."""
        out: list[Message] = []
        for device in list(self._sessions):
            self._release(device, out)
        return out

    def next_deadline_s(self) -> float | None:
        """Seconds until the earliest front's deadline (None: nothing held)."""
        if not self._sessions:
            return None
        earliest = min(session.held[0].deadline_ms for session in self._sessions.values())
        return max(0.0, (earliest - self._clock_ms()) / 1000)

    def __len__(self) -> int:
        return len(self._ids)
