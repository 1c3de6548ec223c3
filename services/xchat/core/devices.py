"""Device records: written by auth, read by every service.

A record lives in the ``xchat_devices`` bucket under its device id. Readers
on hot paths (relay checking a recipient) use a short-lived cache, so a
revocation is seen everywhere within ``CACHE_TTL_S``.

A record may hold the device's *delivery verifier* (SHA-256 of its delivery
access key, issue 17): relay checks an unidentified sender's key against it,
so a rotation is seen everywhere within the same bound.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, replace

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from xchat.core.errors import Unavailable
from xchat.core.ids import AccountId, DeviceId

CACHE_TTL_S = 2.0
CACHE_MAX_ENTRIES = 100_000
# Bound on one device-record read (s): a stuck store read turns into UNAVAILABLE.
READ_TIMEOUT_S = 5.0
# A cache fill waits this long for the bucket's leader, then asks a replica
# (direct get): a leader election takes 4-9 s, a send must not (ADR 0013).
LEADER_READ_S = 0.25


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device: DeviceId
    account: AccountId
    identity_key: bytes
    revoked: bool
    created_at_ms: int
    # SHA-256 of the delivery access key; empty: no unidentified delivery.
    delivery_verifier: bytes = b""
    # Unrestricted unidentified delivery (the device's opt-in): sealed sends
    # from anyone, with any or no delivery key (xchat.relay.sealed).
    sealed_from_anyone: bool = False

    def encode(self) -> bytes:
        raw: dict[str, object] = {
            "v": 1,
            "account": self.account,
            "identity_key": base64.b64encode(self.identity_key).decode(),
            "revoked": self.revoked,
            "created_at_ms": self.created_at_ms,
        }
        if self.delivery_verifier:
            raw["delivery_verifier"] = base64.b64encode(self.delivery_verifier).decode()
        if self.sealed_from_anyone:
            raw["sealed_from_anyone"] = True
        return json.dumps(raw, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, device: DeviceId, data: bytes) -> DeviceRecord:
        raw = json.loads(data)
        return cls(
            device=device,
            account=AccountId(raw["account"]),
            identity_key=base64.b64decode(raw["identity_key"]),
            revoked=bool(raw["revoked"]),
            created_at_ms=int(raw["created_at_ms"]),
            delivery_verifier=base64.b64decode(raw.get("delivery_verifier", "")),
            sealed_from_anyone=raw.get("sealed_from_anyone") is True,
        )

    def revoke(self) -> DeviceRecord:
        return replace(self, revoked=True)

    def with_verifier(self, verifier: bytes, *, sealed_from_anyone: bool = False) -> DeviceRecord:
        return replace(self, delivery_verifier=verifier, sealed_from_anyone=sealed_from_anyone)


class DeviceDirectory:
    def __init__(
        self,
        bucket: KeyValue,
        *,
        replica: KeyValue | None = None,
        cache_ttl_s: float = CACHE_TTL_S,
        timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self._bucket = bucket
        # Direct gets on the same bucket (``Store.replica``): the fallback of cache fills.
        self._replica = replica
        self._ttl = cache_ttl_s
        # Every read is bounded: callers (the RPC edge, Sync admission) share one
        # in-flight read per device, so one unbounded read would stall them all.
        self._timeout = timeout_s
        self._cache: dict[DeviceId, tuple[float, DeviceRecord | None]] = {}
        # Single flight: concurrent misses for one device share one store read.
        self._loading: dict[DeviceId, asyncio.Future[DeviceRecord | None]] = {}

    async def get(self, device: DeviceId) -> tuple[DeviceRecord | None, int]:
        """The record and its revision (0 when absent), read from the store (and cached)."""
        try:
            entry = await asyncio.wait_for(self._bucket.get(device), self._timeout)
        except nats.js.errors.KeyNotFoundError:
            entry = None
        if entry is None or entry.value is None:
            self._remember(device, None)
            return None, 0
        record = DeviceRecord.decode(device, entry.value)
        self._remember(device, record)
        return record, entry.revision or 0

    async def cached(self, device: DeviceId) -> DeviceRecord | None:
        now = time.monotonic()
        hit = self._cache.get(device)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        loading = self._loading.get(device)
        if loading is not None:
            return await asyncio.wait_for(asyncio.shield(loading), self._timeout)
        future: asyncio.Future[DeviceRecord | None] = asyncio.get_running_loop().create_future()
        self._loading[device] = future
        try:
            record = await self._load(device)
            future.set_result(record)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here; waiters re-raise it
            raise
        finally:
            del self._loading[device]
        return record

    async def _load(self, device: DeviceId) -> DeviceRecord | None:
        """The leader's answer; when it is slow or gone, a replica's (a found record only).

        A replica can lag: a record it holds may miss a revocation of the last
        moments (the same bound as the cache), and a miss there may be a
        registration it has not applied yet, so a miss is UNAVAILABLE (retried),
        never "no such device". Compare-and-set callers use ``get`` (leader only).
        """
        if self._replica is None:
            return (await self.get(device))[0]
        try:
            return (await asyncio.wait_for(self.get(device), LEADER_READ_S))[0]
        except (asyncio.TimeoutError, nats.errors.Error) as exc:
            leader_error: BaseException = exc
        entry = await self._replica_get(device)
        if entry is None or entry.value is None:
            raise Unavailable(f"device directory has no leader and no replica here knows device {device}; retry") from leader_error
        record = DeviceRecord.decode(device, entry.value)
        self._remember(device, record)
        return record

    async def _replica_get(self, device: DeviceId) -> KeyValue.Entry | None:
        """A replica's entry: asked again every ``LEADER_READ_S`` (a request routed to a frozen
        replica is never answered), until the read timeout."""
        assert self._replica is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            try:
                return await asyncio.wait_for(self._replica.get(device), min(LEADER_READ_S, max(deadline - loop.time(), 0.001)))
            except nats.js.errors.KeyNotFoundError:
                return None
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                if loop.time() >= deadline:
                    raise

    def _remember(self, device: DeviceId, record: DeviceRecord | None) -> None:
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[device] = (time.monotonic(), record)
