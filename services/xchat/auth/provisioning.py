"""Provisioning messages for linking a device (docs/adr/0011): ciphertext only, short-lived, single use.

The linking device puts an AEAD ciphertext at a random 16-byte rendezvous id;
the new device, which has no token yet, takes it anonymously with the id from
the code the user carried over. Auth never sees the key (it is in the code).
Entries live in the challenges bucket (auth's own, TTL 120 s), under
``link.<id>``, with their own expiry in the value; taking deletes with the
revision read, so two concurrent takers cannot both get it.
"""

from __future__ import annotations

import json
import base64
import time

import nats.js.errors
from nats.js.kv import KeyValue

from xchat.core.errors import AlreadyExists, InvalidArgument, NotFound
from xchat.core.ids import exact_length

RENDEZVOUS_ID_BYTES = 16
MAX_PROVISIONING_BYTES = 4096
# Shorter than the challenges bucket's TTL (120 s), which removes it for good.
PROVISIONING_LIFETIME_MS = 120_000
PREFIX = "link."


def _now_ms() -> int:
    return int(time.time() * 1000)


class Provisioning:
    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket

    async def put(self, rendezvous_id: bytes, ciphertext: bytes) -> int:
        exact_length(rendezvous_id, RENDEZVOUS_ID_BYTES, field="rendezvous_id")
        if not 0 < len(ciphertext) <= MAX_PROVISIONING_BYTES:
            raise InvalidArgument(f"ciphertext must be 1..{MAX_PROVISIONING_BYTES} bytes")
        expires = _now_ms() + PROVISIONING_LIFETIME_MS
        value = json.dumps({"exp": expires, "c": base64.b64encode(ciphertext).decode()}).encode()
        try:
            await self._bucket.create(PREFIX + rendezvous_id.hex(), value)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise AlreadyExists("that rendezvous id is taken: choose another random one") from exc
        return expires

    async def take(self, rendezvous_id: bytes) -> bytes:
        exact_length(rendezvous_id, RENDEZVOUS_ID_BYTES, field="rendezvous_id")
        key = PREFIX + rendezvous_id.hex()
        gone = NotFound("no provisioning message at that id (unknown, expired or already taken): link again")
        try:
            entry = await self._bucket.get(key)
            await self._bucket.delete(key, last=entry.revision)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyWrongLastSequenceError) as exc:
            raise gone from exc
        except nats.js.errors.APIError as exc:  # a concurrent taker deleted it first
            raise gone from exc
        raw = json.loads(entry.value or b"{}")
        if int(raw.get("exp", 0)) < _now_ms():
            raise gone
        return base64.b64decode(raw["c"])
