"""Per-account attachment quota: bytes and count reserved per account, released by expiry.

One KV record per account (key: a hash of the account, so keys are always
valid NATS tokens) lists the attachments it claimed with their size and
expiry. ``reserve`` adds one with a revision compare-and-set (replicas of
relay in any region agree), pruning expired entries first: the quota frees
itself as attachments expire, no sweeper needed. The record's own KV TTL is
the attachment TTL, so an account that stops uploading leaves nothing behind.

Reserved at claim time for the whole declared size: an abandoned upload
holds its reservation until it expires (the caller can see when in the
refusal's retry hint) or its owner deletes it (``release``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import nats.js.errors
from nats.js.kv import KeyValue

from xchat.core.errors import ResourceExhausted, Unavailable

# Compare-and-set attempts before giving up (concurrent claims by the same account).
CAS_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """``bytes``: ciphertext bytes one account may hold; ``count``: attachments it may hold (bounds the record)."""

    bytes: int
    count: int


def _key(account: str) -> str:
    return hashlib.sha256(b"xchat-attachment-quota\x00" + account.encode()).hexdigest()[:40]


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


class AttachmentQuota:
    def __init__(self, bucket: KeyValue, limits: QuotaLimits) -> None:
        self._bucket = bucket
        self.limits = limits

    async def reserve(self, account: str, attachment: str, size: int, *, expires_ms: int, now_ms: int) -> None:
        """Reserves ``size`` bytes for ``attachment`` (idempotent per attachment) or raises RESOURCE_EXHAUSTED."""
        key = _key(account)
        for _ in range(CAS_ATTEMPTS):
            try:
                entry = await self._bucket.get(key)
                revision: int | None = entry.revision
                items: dict[str, list[int]] = json.loads(entry.value or b"{}").get("items", {})
            except nats.js.errors.KeyNotFoundError:
                revision, items = None, {}
            items = {k: v for k, v in items.items() if v[1] > now_ms}
            if attachment in items:
                return
            used = sum(v[0] for v in items.values())
            if len(items) >= self.limits.count or used + size > self.limits.bytes:
                raise self._refusal(items, used, size, now_ms)
            items[attachment] = [size, expires_ms]
            value = json.dumps({"items": items}, separators=(",", ":")).encode()
            try:
                if revision is None:
                    await self._bucket.create(key, value)
                else:
                    await self._bucket.update(key, value, last=revision)
                return
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError, nats.js.errors.KeyNotFoundError):
                # Another claim of this account won the race: read again. (A lost ``create`` race can
                # surface as KeyNotFoundError: nats-py re-reads the key after the wrong-sequence answer,
                # and the replica it asks may not hold the winner's write yet.)
                continue
        raise Unavailable("attachment quota record is contended; retry")

    async def release(self, account: str, attachment: str) -> None:
        """Frees ``attachment``'s reservation at once (its owner deleted it); idempotent."""
        key = _key(account)
        for _ in range(CAS_ATTEMPTS):
            try:
                entry = await self._bucket.get(key)
            except nats.js.errors.KeyNotFoundError:
                return
            items: dict[str, list[int]] = json.loads(entry.value or b"{}").get("items", {})
            if attachment not in items:
                return
            del items[attachment]
            value = json.dumps({"items": items}, separators=(",", ":")).encode()
            try:
                await self._bucket.update(key, value, last=entry.revision)
                return
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                continue  # another claim or release of this account won the race: read again
        raise Unavailable("attachment quota record is contended; retry")

    def _refusal(self, items: dict[str, list[int]], used: int, size: int, now_ms: int) -> ResourceExhausted:
        """The refusal, with the time until enough reservations expire for this upload (if they ever do)."""
        limits = self.limits
        if size > limits.bytes:
            return ResourceExhausted(
                f"an attachment of {_mib(size)} is larger than the account's attachment quota of {_mib(limits.bytes)}"
            )
        freed, count, wait_ms = 0, len(items), None
        for item_size, expires in sorted(items.values(), key=lambda v: v[1]):
            freed += item_size
            count -= 1
            if used - freed + size <= limits.bytes and count < limits.count:
                wait_ms = max(1, expires - now_ms)
                break
        hint = f"; room frees up in {math.ceil((wait_ms or 0) / 1000)}s as older attachments expire" if wait_ms else ""
        return ResourceExhausted(
            f"attachment quota reached: {_mib(used)} in {len(items)} attachments of at most "
            f"{_mib(limits.bytes)} in {limits.count}; this upload needs {_mib(size)}{hint}",
            retry_after_ms=wait_ms,
        )
