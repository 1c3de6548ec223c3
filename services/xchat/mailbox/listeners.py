"""The Sync calls open in this process, by device: wake-ups, the per-device cap, ending calls.

One core-NATS subscription per process (``xchat.ntf.*``), taken when the
process starts (``subscribe``), instead of one per call: relay's wake-up for a
device sets the event of each local call of that device. Wake-ups are core
NATS (fire-and-forget), so every local call is woken whenever some may have
been lost: after a NATS reconnect or a slow-consumer drop
(``Store.on_messages_lost``), and when the store becomes reachable again
after a failing period (``revocations``: a healed partition). The calls' rare
safety poll bounds the delay of any other lost one (ADR 0008).

Wake-ups are also remembered for ``RECENT_WAKEUP_S``, for calls that open
after them. A send is acknowledged once a quorum of replicas holds the
envelope, and its wake-up goes out at once; a device that opens a Sync just
then (the app sent, then listened; a reconnect) may read its backlog from a
replica that has not applied the write yet. Without the remembered sequence
that call sees an empty backlog and waits for the safety poll (20-30 s); with
it, the call re-reads until its replica has caught up (``announced``). A
remembered envelope acknowledged meanwhile costs a new call a few re-reads,
bounded by the catch-up bound; acknowledgements through a call of this
process forget it at once (``removed_through``).

At most ``MAX_SYNCS_PER_DEVICE`` calls per device per process: a new call ends
the device's oldest one with RESOURCE_EXHAUSTED. The oldest, not the newest,
because a device that reconnects after a silent network failure must not be
locked out by its own stale call, which the server has not noticed is dead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from nats.aio.msg import Msg

from xchat.core.errors import ResourceExhausted, Unavailable
from xchat.core.ids import DeviceId
from xchat.core.permissions import EPHEMERAL_SUBJECTS
from xchat.core.store import HEDGE_WAKEUP_PREFIX, NOTIFY_SUBJECT_PREFIX, NOTIFY_SUBJECTS, Store

log = logging.getLogger(__name__)

MAX_SYNCS_PER_DEVICE = 4
# How long a wake-up is remembered for calls opened after it (seconds): the
# mailbox's catch-up bound (``CATCH_UP_BOUND_S``); a replica further behind
# than that is left to the safety poll anyway.
RECENT_WAKEUP_S = 10.0
# Hedge wake-ups are remembered longer (ADR 0013): a call reopened after a
# freeze or kill (seconds later) must know the hedge stream holds something,
# so it does not deliver newer records of the mailbox stream before it.
RECENT_HEDGE_WAKEUP_S = 60.0
# Devices remembered at most (the least recently woken go first): every process
# receives every wake-up; an entry costs about 300 bytes (measured), so 6 MB at
# most. Past 2,000 woken devices a second the memory spans less than
# RECENT_WAKEUP_S, still far more than a replica's usual lag (milliseconds).
RECENT_WAKEUPS_MAX = 20_000
# Ephemeral signals (typing, presence; ``xchat.relay.ephemeral``) waiting for one call's
# next response: relay's rate limit keeps it to a few; beyond it the oldest are dropped.
EPHEMERAL_PENDING_MAX = 32
EPHEMERAL_SUBJECT_PREFIX = EPHEMERAL_SUBJECTS[:-1]
# Why a call ended (or was refused) while this region is cut off from the store.
CUT_OFF_TEXT = "this region cannot reach the message store (lost its quorum, or cut off): connect to another region"


class Listener:
    """One Sync call: its wake-up event, and why it must end (set from outside)."""

    __slots__ = ("device", "wake", "ended", "polled", "announced", "hedge_announced", "hedge_live", "lost", "ephemeral")

    def __init__(self, device: DeviceId) -> None:
        self.device = device
        self.wake = asyncio.Event()
        # The highest stream sequence relay's wake-ups named for this device: a
        # read that has not reached it is answered by a lagging replica.
        self.announced = 0
        # The same for the hedge stream (wake-ups ``h<seq>``, ADR 0013).
        self.hedge_announced = 0
        # The highest hedge sequence announced while this call is open (not remembered from
        # before it: such a record may be gone, acknowledged through another call). A hedge
        # read that has not reached it holds the mailbox stream's records back (``hedge``).
        self.hedge_live = 0
        # True when the last wake came from the safety poll, not from relay.
        self.polled = False
        # True when wake-ups may have been lost or named no sequence (a NATS reconnect, a
        # healed partition): ``announced`` is then no guide, and an empty read is retried.
        self.lost = False
        # XChatError, or a store error the RPC edge translates.
        self.ended: Exception | None = None
        # Sealed ephemeral signals for this call's next response (never stored, never acked).
        self.ephemeral: deque[bytes] = deque(maxlen=EPHEMERAL_PENDING_MAX)

    async def wait(self, timeout: float) -> None:
        """Waits for a wake-up or ``timeout`` (then ``polled`` is set).

        A timer handle rather than ``asyncio.wait_for``, which costs a task per
        wait: an idle call holds no task of its own while it waits.
        """
        timer = asyncio.get_running_loop().call_later(timeout, self._poll)
        try:
            await self.wake.wait()
        finally:
            timer.cancel()

    def _poll(self) -> None:
        self.polled = True
        self.wake.set()

    def end(self, error: Exception) -> None:
        if self.ended is None:
            self.ended = error
        self.wake.set()


def _announced(payload: bytes) -> int:
    """The sequence a wake-up names (ASCII digits); 0 for an empty or malformed payload."""
    if not payload or len(payload) > 20 or not payload.isdigit():
        return 0
    return int(payload)


class Listeners:
    def __init__(self, store: Store, *, max_per_device: int = MAX_SYNCS_PER_DEVICE) -> None:
        self._store = store
        self._max = max_per_device
        # Insertion order per device = age order (oldest first).
        self._by_device: dict[DeviceId, dict[Listener, None]] = {}
        # Device -> (highest sequence woken for, loop time of the latest wake-up), least recent first.
        self._recent: OrderedDict[DeviceId, tuple[int, float]] = OrderedDict()
        self._recent_hedge: OrderedDict[DeviceId, tuple[int, float]] = OrderedDict()
        self._subscribed = False
        self._lock = asyncio.Lock()
        store.on_messages_lost(self.wake_all)
        store.on_cut_off(self.end_all_cut_off)
        # Push (``xchat.mailbox.push``): told when a device gets its first or loses its last
        # call here, and of each wake-up for a device with no call here.
        self.on_online: Callable[[DeviceId, bool], None] | None = None
        self.on_wakeup_without_call: Callable[[DeviceId], None] | None = None

    async def subscribe(self) -> None:
        """Takes the process's wake-up subscription (at start: wake-ups before a device's call are remembered)."""
        async with self._lock:
            if not self._subscribed:
                await self._store.nc.subscribe(NOTIFY_SUBJECTS, cb=self._on_wakeup)
                await self._store.nc.subscribe(EPHEMERAL_SUBJECTS, cb=self._on_ephemeral)
                self._subscribed = True

    async def _on_wakeup(self, msg: Msg) -> None:
        device = DeviceId(msg.subject[len(NOTIFY_SUBJECT_PREFIX) :])
        listeners = self._by_device.get(device)
        if listeners is None and self.on_wakeup_without_call is not None:
            self.on_wakeup_without_call(device)
        if msg.data.startswith(HEDGE_WAKEUP_PREFIX):
            hedged = _announced(msg.data[len(HEDGE_WAKEUP_PREFIX) :])
            if hedged:
                self._remember(device, hedged, self._recent_hedge, RECENT_HEDGE_WAKEUP_S)
            for listener in listeners or ():
                listener.hedge_announced = max(listener.hedge_announced, hedged)
                listener.hedge_live = max(listener.hedge_live, hedged)
                listener.lost = listener.lost or not hedged
                listener.wake.set()
            return
        sequence = _announced(msg.data)
        if sequence:
            self._remember(device, sequence, self._recent, RECENT_WAKEUP_S)
        for listener in listeners or ():
            listener.announced = max(listener.announced, sequence)
            listener.lost = listener.lost or not sequence
            listener.wake.set()

    async def _on_ephemeral(self, msg: Msg) -> None:
        """A signal for this device's calls here, if any: nothing keeps it for a call opened later."""
        for listener in self._by_device.get(DeviceId(msg.subject[len(EPHEMERAL_SUBJECT_PREFIX) :]), ()):
            listener.ephemeral.append(msg.data)
            listener.wake.set()

    def _remember(
        self, device: DeviceId, sequence: int, recent: OrderedDict[DeviceId, tuple[int, float]], keep_s: float
    ) -> None:
        now = asyncio.get_running_loop().time()
        previous = recent.pop(device, None)
        if previous is not None:
            sequence = max(sequence, previous[0])
        recent[device] = (sequence, now)
        while recent:
            oldest, (_, at) = next(iter(recent.items()))
            if now - at < keep_s and len(recent) <= RECENT_WAKEUPS_MAX:
                break
            del recent[oldest]

    def recently_announced(self, device: DeviceId, *, hedge: bool = False) -> int:
        """The highest sequence woken for ``device`` in the last ``RECENT_WAKEUP_S`` (0: none);
        ``hedge``: in the hedge stream, in the last ``RECENT_HEDGE_WAKEUP_S``."""
        recent, keep_s = (self._recent_hedge, RECENT_HEDGE_WAKEUP_S) if hedge else (self._recent, RECENT_WAKEUP_S)
        entry = recent.get(device)
        if entry is None or asyncio.get_running_loop().time() - entry[1] >= keep_s:
            return 0
        return entry[0]

    def removed_through(self, device: DeviceId, sequence: int, *, hedge: bool = False) -> None:
        """Everything of ``device`` up to ``sequence`` is gone: a later call has nothing there to wait for."""
        recent = self._recent_hedge if hedge else self._recent
        entry = recent.get(device)
        if entry is not None and entry[0] <= sequence:
            del recent[device]

    def wake_all(self) -> None:
        for listeners in self._by_device.values():
            for listener in listeners:
                listener.lost = True
                listener.wake.set()

    def devices(self) -> Iterable[DeviceId]:
        return self._by_device.keys()

    def end_all_cut_off(self) -> None:
        """Ends every call here: this region cannot reach the store, and a call kept open would
        wait, silent, for wake-ups that no longer arrive (a partition: the other regions' relays
        cannot reach it). The SDK fails over on UNAVAILABLE, and comes home once health serves."""
        for listeners in self._by_device.values():
            for listener in listeners:
                listener.end(Unavailable(CUT_OFF_TEXT))

    def end_device(self, device: DeviceId, error: Exception) -> None:
        for listener in list(self._by_device.get(device, ())):
            listener.end(error)

    async def add(self, device: DeviceId) -> Listener:
        """Registers a new call (it knows recent wake-ups); ends the device's oldest over the cap."""
        if not self._subscribed:
            await self.subscribe()
        first = device not in self._by_device
        listeners = self._by_device.setdefault(device, {})
        if first and self.on_online is not None:
            self.on_online(device, True)
        while len(listeners) >= self._max:
            oldest = next(iter(listeners))
            del listeners[oldest]
            oldest.end(
                ResourceExhausted(
                    f"ended: a newer Sync of this device replaced it (at most {self._max} per device per server)"
                )
            )
        listener = Listener(device)
        # Stored before this call could be woken: its backlog read must reach it.
        listener.announced = self.recently_announced(device)
        listener.hedge_announced = self.recently_announced(device, hedge=True)
        listeners[listener] = None
        return listener

    def remove(self, listener: Listener) -> None:
        listeners = self._by_device.get(listener.device)
        if listeners is None:
            return
        listeners.pop(listener, None)
        if not listeners:
            del self._by_device[listener.device]
            if self.on_online is not None:
                self.on_online(listener.device, False)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self._by_device.values())

