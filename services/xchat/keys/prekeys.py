"""The prekey directory: publish prekeys, hand out bundles, each one-time key once.

Layout in the ``xchat_prekeys`` bucket, per device ``D``:
``D.spk`` signed X25519 prekey, ``D.pqlr`` last-resort ML-KEM-768 prekey,
``D.otk.<id>`` / ``D.pqotk.<id>`` one-time keys, and ``D.otk-index`` /
``D.pqotk-index`` the ordered list of one-time ids still available (and the
highest id ever published: an upload retried after a lost answer publishes
nothing twice, even keys handed out in between).

Exactly-once hand-out: a fetch pops the first id from the index with a
compare-and-set update on the revision it read. Two regions racing for the
same device both read revision r; only one update with ``last=r`` succeeds,
the other re-reads and takes the next id. The key entry is deleted after.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from dataclasses import dataclass

import nats.js.errors
from nats.js.kv import KeyValue


from xchat.core.devices import DeviceDirectory, DeviceRecord
from xchat.core.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from xchat.core.signatures import verify_signature
from xchat.core.ids import ED25519_SIGNATURE_BYTES, AccountId, DeviceId
from xchat.statements import prekey_statement

X25519_BYTES = 32
MLKEM768_PUBLIC_BYTES = 1184
KIND_SIGNED_PREKEY = 1
KIND_PQ_PREKEY = 2
KIND_PQ_LAST_RESORT = 3
MAX_UPLOAD_PER_CALL = 100
MAX_STORED_ONE_TIME = 1000
CAS_ATTEMPTS = 50
MAX_KEY_ID = 2**32 - 1
# Purges in flight at once for one PurgeRevoked call (a device holds up to 2,002 key entries).
PURGE_CONCURRENCY = 32
#: Devices one PurgeRevoked call may name (an account's maximum, xchat.auth.accounts).
MAX_PURGE_DEVICES = 16


@dataclass(frozen=True, slots=True)
class PublicPrekey:
    key_id: int
    public_key: bytes
    signature: bytes = b""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "id": self.key_id,
                "pub": base64.b64encode(self.public_key).decode(),
                "sig": base64.b64encode(self.signature).decode(),
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> PublicPrekey:
        raw = json.loads(data)
        return cls(int(raw["id"]), base64.b64decode(raw["pub"]), base64.b64decode(raw["sig"]))


@dataclass(frozen=True, slots=True)
class Upload:
    signed_prekey: PublicPrekey | None
    one_time: tuple[PublicPrekey, ...]
    pq_one_time: tuple[PublicPrekey, ...]
    pq_last_resort: PublicPrekey | None


@dataclass(frozen=True, slots=True)
class Bundle:
    device: DeviceRecord
    signed_prekey: PublicPrekey
    one_time: PublicPrekey | None
    pq_prekey: PublicPrekey
    pq_is_last_resort: bool


def _check(key: PublicPrekey, *, kind: int | None, size: int, what: str, identity_key: bytes) -> None:
    if not 0 <= key.key_id <= MAX_KEY_ID:
        raise InvalidArgument(f"{what} key_id {key.key_id} is out of range")
    if len(key.public_key) != size:
        raise InvalidArgument(f"{what} {key.key_id}: public_key must be {size} bytes, got {len(key.public_key)}")
    if kind is None:
        return
    if len(key.signature) != ED25519_SIGNATURE_BYTES:
        raise InvalidArgument(f"{what} {key.key_id}: signature must be 64 bytes, got {len(key.signature)}")
    if not verify_signature(identity_key, prekey_statement(kind, key.key_id, key.public_key), key.signature):
        raise InvalidArgument(f"{what} {key.key_id}: signature does not verify with the device identity key")


def _encode_index(ids: list[int], high: int) -> bytes:
    return json.dumps({"ids": ids, "high": high}).encode()


def _decode_index(value: bytes | None) -> tuple[list[int], int]:
    """(ids, highest id ever published); the first format was the bare list."""
    raw = json.loads(value or b"[]")
    if isinstance(raw, list):
        return [int(i) for i in raw], max(raw, default=-1)
    return [int(i) for i in raw["ids"]], int(raw["high"])


class PrekeyDirectory:
    def __init__(self, prekeys: KeyValue, accounts: KeyValue, devices: DeviceDirectory) -> None:
        self._kv = prekeys
        self._accounts = accounts
        self._devices = devices

    async def upload(self, device: DeviceId, upload: Upload) -> tuple[int, int]:
        record, _ = await self._devices.get(device)
        if record is None or record.revoked:
            raise FailedPrecondition(f"device {device} is not an active device")
        ik = record.identity_key
        for name, keys in (("one_time_prekeys", upload.one_time), ("pq_one_time_prekeys", upload.pq_one_time)):
            if len(keys) > MAX_UPLOAD_PER_CALL:
                raise InvalidArgument(f"{name}: at most {MAX_UPLOAD_PER_CALL} per call, got {len(keys)}")
            ids = [k.key_id for k in keys]
            if len(set(ids)) != len(ids):
                raise InvalidArgument(f"{name}: duplicate key ids in one upload")
        if upload.signed_prekey is not None:
            _check(upload.signed_prekey, kind=KIND_SIGNED_PREKEY, size=X25519_BYTES, what="signed prekey", identity_key=ik)
        if upload.pq_last_resort is not None:
            _check(upload.pq_last_resort, kind=KIND_PQ_LAST_RESORT, size=MLKEM768_PUBLIC_BYTES, what="PQ last-resort prekey", identity_key=ik)
        for key in upload.one_time:
            _check(key, kind=None, size=X25519_BYTES, what="one-time prekey", identity_key=ik)
        for key in upload.pq_one_time:
            _check(key, kind=KIND_PQ_PREKEY, size=MLKEM768_PUBLIC_BYTES, what="PQ one-time prekey", identity_key=ik)
        # Validation is complete before anything is written: bad input never
        # leaves a partial upload behind.
        if upload.signed_prekey is not None:
            await self._kv.put(f"{device}.spk", upload.signed_prekey.encode())
        if upload.pq_last_resort is not None:
            await self._kv.put(f"{device}.pqlr", upload.pq_last_resort.encode())
        otk = await self._append(device, "otk", upload.one_time)
        pqotk = await self._append(device, "pqotk", upload.pq_one_time)
        return otk, pqotk

    async def _index(self, device: DeviceId, kind: str) -> tuple[list[int], int, int]:
        """(ids still available in hand-out order, revision, highest id ever published)."""
        try:
            entry = await self._kv.get(f"{device}.{kind}-index")
        except nats.js.errors.KeyNotFoundError:
            return [], 0, -1
        ids, high = _decode_index(entry.value)
        return ids, entry.revision or 0, high

    async def _unpublished(self, device: DeviceId, kind: str, keys: tuple[PublicPrekey, ...],
                           ids: list[int], high: int) -> tuple[PublicPrekey, ...]:
        """``keys`` less those an earlier upload published (a retried call must succeed).

        Ids at or below the highest ever published were published before: still
        stored, they must be the same key (else INVALID_ARGUMENT); handed out
        already, they are dropped, never published twice (a one-time key is used once).
        """
        available = set(ids)
        fresh = []
        for key in keys:
            if key.key_id > high:
                fresh.append(key)
            elif key.key_id in available:
                stored = await self._get(f"{device}.{kind}.{key.key_id}")
                if stored is not None and stored != key:
                    raise InvalidArgument(
                        f"{kind} key id {key.key_id} is already published with another key; use fresh ids"
                    )
        return tuple(fresh)

    async def _append(self, device: DeviceId, kind: str, keys: tuple[PublicPrekey, ...]) -> int:
        written = False
        for _ in range(CAS_ATTEMPTS):
            ids, revision, high = await self._index(device, kind)
            if not written:
                keys = await self._unpublished(device, kind, keys, ids, high)
            if not keys:
                return len(ids)
            if len(ids) + len(keys) > MAX_STORED_ONE_TIME:
                raise ResourceExhausted(
                    f"at most {MAX_STORED_ONE_TIME} one-time prekeys may be stored; {len(ids)} are, {len(keys)} more given"
                )
            if not written:
                # Entries first, concurrently and once; they are unreachable
                # until the index (below) names them.
                await asyncio.gather(*(self._kv.put(f"{device}.{kind}.{k.key_id}", k.encode()) for k in keys))
                written = True
            clash = set(ids) & {k.key_id for k in keys}
            if clash:  # a concurrent upload of the same ids won the race
                raise InvalidArgument(f"{kind} key id {min(clash)} is already published; use fresh ids")
            body = _encode_index(ids + [k.key_id for k in keys], max(high, *(k.key_id for k in keys)))
            try:
                if revision:
                    await self._kv.update(f"{device}.{kind}-index", body, last=revision)
                else:
                    await self._kv.create(f"{device}.{kind}-index", body)
                return len(ids) + len(keys)
            except nats.js.errors.KeyWrongLastSequenceError:
                await asyncio.sleep(random.uniform(0, 0.02))
        raise Unavailable("prekey index kept changing under concurrent uploads; retry")

    async def _pop(self, device: DeviceId, kind: str) -> PublicPrekey | None:
        for _ in range(CAS_ATTEMPTS):
            ids, revision, high = await self._index(device, kind)
            if not ids:
                return None
            try:
                await self._kv.update(f"{device}.{kind}-index", _encode_index(ids[1:], high), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                await asyncio.sleep(random.uniform(0, 0.01))
                continue
            # This caller alone removed ids[0] from the index: the key is ours.
            key_name = f"{device}.{kind}.{ids[0]}"
            try:
                entry = await self._kv.get(key_name)
            except nats.js.errors.KeyNotFoundError:
                continue
            await self._kv.purge(key_name)
            return PublicPrekey.decode(entry.value or b"{}")
        raise Unavailable("too many concurrent fetches for this device; retry")

    async def _get(self, name: str) -> PublicPrekey | None:
        try:
            entry = await self._kv.get(name)
        except nats.js.errors.KeyNotFoundError:
            return None
        return PublicPrekey.decode(entry.value or b"{}")

    async def purge_revoked(self, devices: list[DeviceId]) -> int:
        """Removes every key of each revoked device among ``devices`` (a deleted account's); returns
        how many were. Keys first, indexes last: a purge cut short is finished by the next one."""
        purged = 0
        gate = asyncio.Semaphore(PURGE_CONCURRENCY)

        async def purge(name: str) -> None:
            async with gate:
                await self._kv.purge(name)

        for device in devices:
            record, _ = await self._devices.get(device)
            if record is None or not record.revoked:
                continue  # only a revoked device's keys: revocation is final, its keys never handed out again
            keys = [f"{device}.spk", f"{device}.pqlr"]
            for kind in ("otk", "pqotk"):
                keys += [f"{device}.{kind}.{i}" for i in (await self._index(device, kind))[0]]
            await asyncio.gather(*(purge(name) for name in keys))
            await asyncio.gather(*(purge(f"{device}.{kind}-index") for kind in ("otk", "pqotk")))
            purged += 1
        return purged

    async def count(self, device: DeviceId) -> tuple[int, int]:
        return len((await self._index(device, "otk"))[0]), len((await self._index(device, "pqotk"))[0])

    async def devices_of(self, account: AccountId, only: DeviceId | None) -> list[DeviceId]:
        """The devices a fetch would cover (NOT_FOUND for an unknown account or device)."""
        try:
            entry = await self._accounts.get(account)
        except nats.js.errors.KeyNotFoundError as exc:
            raise NotFound(f"account {account!r} does not exist") from exc
        devices = [DeviceId(d) for d in json.loads(entry.value or b"{}")["devices"]]
        if only is not None:
            if only not in devices:
                raise NotFound(f"device {only} is not a device of {account!r}")
            devices = [only]
        return devices

    async def bundles(self, account: AccountId, devices: list[DeviceId], *, claim: bool = True) -> list[Bundle]:
        """Bundles of ``devices``; ``claim=False`` hands out no one-time keys (the budget is spent)."""
        bundles = []
        for device in devices:
            record, _ = await self._devices.get(device)
            if record is None or record.revoked:
                continue
            signed = await self._get(f"{device}.spk")
            last_resort = await self._get(f"{device}.pqlr")
            if signed is None or last_resort is None:
                continue  # the device has not published keys yet
            one_time = await self._pop(device, "otk") if claim else None
            pq = await self._pop(device, "pqotk") if claim else None
            bundles.append(Bundle(record, signed, one_time, pq or last_resort, pq is None))
        if not bundles:
            raise NotFound(f"account {account!r} has no active device with published prekeys")
        return bundles
