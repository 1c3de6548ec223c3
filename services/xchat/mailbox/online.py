"""Which devices have an open Sync anywhere in the mesh: a short-lived view shared over core NATS.

Push (``xchat.mailbox.push``) must know that a device has no open Sync in
*any* region, but each mailbox process only sees its own calls
(``listeners``). So every mailbox process tells the others on
``xchat.online`` (core NATS, never stored):

* ``J <process> <device>`` when a device gets its first call here,
* ``L <process> <device>`` when it loses its last one here,
* ``B <process> <device> ...`` every ``BEAT_S`` seconds: every device with a
  call here (in chunks of ``BEAT_CHUNK``), which also says the process lives.

A device is online while some process's latest word on it is younger than
``EXPIRY_S`` (three beats): a process that dies stops beating and its devices
go offline within that bound. The processes heard from in ``EXPIRY_S`` also
pick, by rendezvous hashing, the one that pushes for a device (``owner``), so
one wake-up reaches the gateway once, not once per mailbox process.

Trade-offs (docs/push.md): a Sync opened in the last few milliseconds in
another region may not be known yet (one superfluous push, harmless); a view
that misses a process briefly (a lost beat) may let two processes push for
one device (one duplicate wake-up). The view costs one small message per
online device per ``BEAT_S`` per mailbox process, received by every mailbox
process; it is bounded by ``MAX_DEVICES`` (beyond it new devices count as
offline: at worst a superfluous push).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable

import nats.errors
from nats.aio.msg import Msg

from xchat.core.ids import DeviceId
from xchat.core.permissions import ONLINE_SUBJECT
from xchat.core.store import Store

log = logging.getLogger(__name__)

BEAT_S = 5.0
EXPIRY_S = 3 * BEAT_S
# Device ids per beat message: 32 hex characters and a space each, ~33 KB.
BEAT_CHUNK = 1000
# Remote (device, process) entries kept at most (~200 bytes each: 100 MB at worst).
MAX_DEVICES = 500_000


class OnlineView:
    def __init__(
        self,
        store: Store,
        *,
        local_devices: Callable[[], Iterable[DeviceId]],
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._store = store
        self._local_devices = local_devices
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self.process = secrets.token_hex(8)
        # device -> {process: loop time of its latest word}
        self._remote: dict[str, dict[str, float]] = {}
        self._processes: dict[str, float] = {}
        self._started_at: float | None = None
        self._beater: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._store.nc.subscribe(ONLINE_SUBJECT, cb=self._on_message)
        self._started_at = self._clock()
        self._beater = asyncio.create_task(self._beat_forever())

    async def stop(self) -> None:
        if self._beater is not None:
            self._beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beater

    @property
    def warm(self) -> bool:
        """True once a full beat of every process had time to arrive (before: the view may miss devices)."""
        return self._started_at is not None and self._clock() - self._started_at >= 1.5 * BEAT_S

    def changed(self, device: DeviceId, online: bool) -> None:
        """``listeners``: ``device`` got its first (``online``) or lost its last call here."""
        if self._started_at is None:
            return
        self._publish(f"{'J' if online else 'L'} {self.process} {device}")

    def online_elsewhere(self, device: DeviceId) -> bool:
        now = self._clock()
        return any(now - at < EXPIRY_S for process, at in self._remote.get(device, {}).items() if process != self.process)

    def owner(self, device: DeviceId) -> bool:
        """True when this process is the one that pushes for ``device`` (rendezvous hashing over live processes)."""
        now = self._clock()
        live = [p for p, at in self._processes.items() if now - at < EXPIRY_S and p != self.process] + [self.process]
        return max(live, key=lambda p: hashlib.sha256(f"{p}/{device}".encode()).digest()) == self.process

    def _publish(self, text: str) -> None:
        async def send() -> None:
            with contextlib.suppress(nats.errors.Error):
                await self._store.nc.publish(ONLINE_SUBJECT, text.encode())

        task = asyncio.get_running_loop().create_task(send())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _beat_forever(self) -> None:
        while True:
            devices = list(self._local_devices())
            try:
                for start in range(0, max(len(devices), 1), BEAT_CHUNK):
                    chunk = " ".join(devices[start : start + BEAT_CHUNK])
                    await self._store.nc.publish(ONLINE_SUBJECT, f"B {self.process} {chunk}".strip().encode())
            except nats.errors.Error as exc:
                log.debug("online beat not published: %s", exc)
            self._prune()
            await asyncio.sleep(BEAT_S)

    async def _on_message(self, msg: Msg) -> None:
        parts = msg.data.decode("ascii", "replace").split()
        if len(parts) < 2 or parts[0] not in ("J", "L", "B") or len(parts[1]) != 16:
            return
        op, process, devices = parts[0], parts[1], parts[2:]
        now = self._clock()
        self._processes[process] = now
        for device in devices:
            if op == "L":
                entry = self._remote.get(device)
                if entry is not None:
                    entry.pop(process, None)
                    if not entry:
                        del self._remote[device]
            elif device in self._remote or len(self._remote) < MAX_DEVICES:
                self._remote.setdefault(device, {})[process] = now

    def _prune(self) -> None:
        now = self._clock()
        for process, at in list(self._processes.items()):
            if now - at >= EXPIRY_S:
                del self._processes[process]
        for device, entry in list(self._remote.items()):
            for process, at in list(entry.items()):
                if now - at >= EXPIRY_S:
                    del entry[process]
            if not entry:
                del self._remote[device]
