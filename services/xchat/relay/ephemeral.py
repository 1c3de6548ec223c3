"""Ephemeral signals (typing, presence): sealed bytes forwarded on core NATS, never stored.

``SendEphemeral`` takes 1..``MAX_ITEMS`` sealed signals from an authenticated
device and publishes each on ``xchat.eph.<recipient device>`` (core NATS:
fire and forget, no JetStream, no ack). Every mailbox process receives them
and hands them to the recipient's open Sync calls, if any
(``xchat.mailbox.listeners``); a device with none simply never sees them. So
nothing of a signal outlives the moment: no stream, no bucket, no log line
with its content.

What relay learns is what it learns of an authenticated send (which device
signals which device, when); the content (typing on/off, online) is sealed
to the recipient's identity key by the SDK (``xchat.client._typing``).

Limits: per sender device and per recipient device (``Rate`` from
``XCHAT_EPHEMERAL_*``), one token per item: a flood from one device, or from
many devices at one recipient, is RESOURCE_EXHAUSTED with a retry hint.
The recipient must be an active device (NOT_FOUND otherwise, as for sends):
the device cache makes this a memory lookup on the hot path.
"""

from __future__ import annotations

import nats.errors

from xchat.core import metrics
from xchat.core.devices import DeviceDirectory
from xchat.core.errors import InvalidArgument, NotFound
from xchat.core.ids import DeviceId, device_id
from xchat.core.permissions import EPHEMERAL_SUBJECTS
from xchat.core.ratelimit import RateLimiter
from xchat.core.store import Store
from xchat.core.tokens import Principal

MAX_ITEMS = 16
MAX_CIPHERTEXT_BYTES = 1024
EPHEMERAL_SUBJECT_PREFIX = EPHEMERAL_SUBJECTS[:-1]  # "xchat.eph."
# Recipient keys in the limiter (device ids are hex: no clash with sender keys).
TO_PREFIX = "to:"


def ephemeral_subject(device: DeviceId) -> str:
    return f"{EPHEMERAL_SUBJECT_PREFIX}{device}"


class EphemeralRelay:
    def __init__(self, store: Store, devices: DeviceDirectory, *, limiter: RateLimiter) -> None:
        self._store = store
        self._devices = devices
        self.limiter = limiter

    async def forward(self, sender: Principal, items: list[tuple[str, bytes]]) -> int:
        """Publishes ``items`` (recipient, sealed bytes); all are checked and paid for before any leaves."""
        if not 0 < len(items) <= MAX_ITEMS:
            raise InvalidArgument(f"an ephemeral batch holds 1..{MAX_ITEMS} items, got {len(items)}")
        checked: list[tuple[DeviceId, bytes]] = []
        for raw, ciphertext in items:
            recipient = device_id(raw, field="recipient_device_id")
            if not 0 < len(ciphertext) <= MAX_CIPHERTEXT_BYTES:
                raise InvalidArgument(f"an ephemeral ciphertext is 1..{MAX_CIPHERTEXT_BYTES} bytes, got {len(ciphertext)}")
            record = await self._devices.cached(recipient)
            if record is None or record.revoked:
                raise NotFound(f"recipient device {recipient} does not exist or has been revoked")
            checked.append((recipient, ciphertext))
        self.limiter.take(sender.device, len(checked))
        for recipient, _ in checked:
            self.limiter.take(TO_PREFIX + recipient)
        published = 0
        for recipient, ciphertext in checked:
            try:
                await self._store.nc.publish(ephemeral_subject(recipient), ciphertext)
                published += 1
            except nats.errors.Error:
                metrics.publish_failed("ephemeral")  # best effort by design: a lost signal is a late one
        return published
