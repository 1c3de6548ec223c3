"""Push for offline devices: a content-free wake-up when an envelope lands and no Sync is open.

Every mailbox process already receives relay's wake-up for every stored
envelope (``listeners``). For a device with no call here, this module asks
the shared ``OnlineView`` whether a call is open in another process or
region; if none is, and this process is the device's push owner among the
live mailbox processes, and the device was not pushed to within the
coalescing window (``XCHAT_PUSH_COALESCE_S``), the device goes on a bounded
queue. One worker task reads the device's push token (``xchat_push`` bucket,
written by the device itself with ``RegisterPush``) and hands it to the
``PushSender`` (``webhook``). So a burst of envelopes costs one push, and the
wake-up path does no I/O: a slow or unreachable gateway fills the queue,
whose overflow is dropped and counted (``xchat_push_total{outcome="dropped"}``),
never slowing delivery.

The token is stored as the device gave it, next to nothing else (the key is
the device id): no sender, account name or content is ever near it, and the
payload the gateway receives is ``{"token": ..., "wake": true}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict

import nats.js.errors
from nats.js.kv import KeyValue

from xchat.core import metrics
from xchat.core.errors import InvalidArgument
from xchat.core.ids import DeviceId
from xchat.mailbox.online import OnlineView
from xchat.mailbox.webhook import PushFailed, PushSender

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 512
# Devices waiting for their push: a gateway that stalls fills it, then wake-ups are dropped (counted).
QUEUE_MAX = 1024
# Devices whose last push time is remembered for coalescing (least recent dropped first).
COALESCE_MAX = 100_000


def check_token(token: bytes) -> str:
    """A push token as stored and sent: printable ASCII (APNs, FCM and webhook tokens are), 0..512 bytes."""
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidArgument(f"a push token is at most {MAX_TOKEN_BYTES} bytes, got {len(token)}")
    if not all(0x21 <= b <= 0x7E for b in token):
        raise InvalidArgument("a push token is printable ASCII without spaces (hex or base64 of a binary token)")
    return token.decode("ascii")


class Pushes:
    def __init__(
        self, bucket: KeyValue, view: OnlineView, sender: PushSender | None, *, coalesce_s: float, queue_max: int = QUEUE_MAX
    ) -> None:
        self._bucket = bucket
        self._view = view
        self._sender = sender
        self._coalesce_s = coalesce_s
        self._last: OrderedDict[DeviceId, float] = OrderedDict()
        self._queue: asyncio.Queue[DeviceId] = asyncio.Queue(queue_max)
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._sender is not None:  # without a gateway, tokens are only kept
            await self._view.start()
            self._worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self._view.stop()

    async def register(self, device: DeviceId, token: bytes) -> None:
        text = check_token(token)
        if text:
            await self._bucket.put(device, token)
        else:
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                await self._bucket.delete(device)

    def stored(self, device: DeviceId) -> None:
        """``listeners``: relay stored an envelope for ``device``, which has no call in this process."""
        if self._sender is None or not self._view.warm or self._view.online_elsewhere(device):
            return
        if not self._view.owner(device):
            return
        now = time.monotonic()
        last = self._last.get(device)
        if last is not None and now - last < self._coalesce_s:
            metrics.PUSHES.labels("coalesced").inc()
            return
        try:
            self._queue.put_nowait(device)
        except asyncio.QueueFull:
            metrics.PUSHES.labels("dropped").inc()
            return
        self._last.pop(device, None)
        self._last[device] = now
        while len(self._last) > COALESCE_MAX:
            self._last.popitem(last=False)

    async def _work(self) -> None:
        assert self._sender is not None
        while True:
            device = await self._queue.get()
            try:
                entry = await self._bucket.get(device)
            except nats.js.errors.KeyNotFoundError:
                continue  # no token registered: nothing to wake
            except Exception as exc:  # noqa: BLE001 - a store hiccup costs one wake-up, not the worker
                log.warning("push token of a device not read: %s", exc)
                metrics.PUSHES.labels("failed").inc()
                continue
            if not entry.value:
                continue
            try:
                await self._sender.send(entry.value.decode("ascii"))
            except PushFailed as exc:
                log.warning("push not delivered: %s", exc)
                metrics.PUSHES.labels("failed").inc()
            else:
                metrics.PUSHES.labels("sent").inc()
