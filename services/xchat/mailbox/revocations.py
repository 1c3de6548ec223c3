"""Ends the open Sync calls of devices revoked (or removed) while they are connected.

A Sync call is opened only by an active device (``DeviceDirectory.cached``,
whose cache lives ``CACHE_TTL_S`` = 2 s). After that, one watch per process
re-checks every connected device: a revocation committed at time t ends the
device's calls here by t + ``RECHECK_INTERVAL_S`` + one store round trip
(3 s + a few ms; ≤ 5 s whenever the store answers), with PERMISSION_DENIED.

Cheap when nothing changes, whatever the number of connected devices: each
round asks only for the devices bucket stream's last sequence. If it has not
moved, no device record changed anywhere. If it has, the records written
since are walked (their subjects name the devices) and only connected
devices among them are re-read; when more records changed than devices are
connected, every connected device is re-read instead. So a round costs one
request plus min(changed records, connected devices).

The same round notices a store that answers again after failing (a healed
partition) and wakes every local call: wake-ups dropped on a cut route would
otherwise wait for the safety poll.
"""

from __future__ import annotations

import asyncio
import logging

import nats.js.errors

from xchat.core.devices import DeviceDirectory
from xchat.core.errors import PermissionDenied
from xchat.core.ids import DeviceId
from xchat.core.store import BUCKET_DEVICES, STORE_ERRORS, Store
from xchat.mailbox.listeners import Listeners

log = logging.getLogger(__name__)

RECHECK_INTERVAL_S = 3.0
DEVICES_STREAM = f"KV_{BUCKET_DEVICES}"
DEVICE_SUBJECT_PREFIX = f"$KV.{BUCKET_DEVICES}."


def revoked_error(device: DeviceId) -> PermissionDenied:
    return PermissionDenied(f"device {device} is revoked or unknown; log in with an active device")


class RevocationWatch:
    def __init__(
        self, store: Store, directory: DeviceDirectory, listeners: Listeners, *, interval_s: float = RECHECK_INTERVAL_S
    ) -> None:
        self._store = store
        self._directory = directory
        self._listeners = listeners
        self._interval = interval_s
        self._seen: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def admit(self, device: DeviceId) -> None:
        """Raises PERMISSION_DENIED unless ``device`` is active."""
        record = await self._directory.cached(device)
        if record is None or record.revoked:
            raise revoked_error(device)

    def follow(self) -> None:
        """Starts the watch if it is not running; called once the call is registered with the
        listeners. Started earlier, it could find no call yet and end at once, whenever the
        opening call yielded in between (it settles its carried-over acks): that call was then
        never re-checked and a revoked device kept reading (caught by CI)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="xchat.mailbox.revocations")

    async def _run(self) -> None:
        # Runs while calls are open; the next call to open starts it again.
        failing = False
        while self._listeners.count:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except STORE_ERRORS as exc:
                failing = True
                self._store.note_trouble()  # wake-ups may be getting lost: reads include the hedge stream
                log.info("device re-check postponed: %s", type(exc).__name__)
                continue
            except Exception:  # noqa: BLE001 - a bug must not stop the watch for good
                log.exception("device re-check failed")
                continue
            if failing:
                # The store answers again (a partition healed): wake-ups sent
                # meanwhile may have been dropped on a cut route.
                failing = False
                self._listeners.wake_all()
        self._seen = None

    async def check(self) -> None:
        """One round (see the module docstring)."""
        info = await self._store.js.stream_info(DEVICES_STREAM)
        last = info.state.last_seq
        if self._seen is None or last - self._seen > self._listeners.count:
            suspects = set(self._listeners.devices())
        else:
            suspects = await self._changed_since(self._seen, last)
        self._seen = last
        for device in suspects:
            record, _ = await self._directory.get(device)  # fresh: bypasses the cache
            if record is None or record.revoked:
                self._listeners.end_device(device, revoked_error(device))

    async def _changed_since(self, seen: int, last: int) -> set[DeviceId]:
        local = set(self._listeners.devices())
        changed: set[DeviceId] = set()
        seq = seen + 1
        while seq <= last:
            try:
                msg = await self._store.js.get_msg(DEVICES_STREAM, seq=seq, subject=f"{DEVICE_SUBJECT_PREFIX}>", next=True)
            except nats.js.errors.NotFoundError:
                break
            device = DeviceId((msg.subject or "")[len(DEVICE_SUBJECT_PREFIX) :])
            if device in local:
                changed.add(device)
            seq = (msg.seq or seq) + 1
        return changed
