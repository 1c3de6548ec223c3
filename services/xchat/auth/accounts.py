"""Accounts, devices, login challenges and refresh tokens, kept in JetStream KV.

Invariants, each enforced with KV compare-and-set rather than locks (several
regions serve the same account concurrently):
- an account name is created once (``create`` fails if the key exists);
- a login nonce and a refresh token are each used at most once (delete with
  the revision that was read; a concurrent second use loses the race);
- a device is written before the account lists it, so a half-finished
  registration leaves an orphan that can never log in, not a broken account;
  and a registration that fails for any reason removes that device record
  again (best effort: the store may be what failed).

Refresh tokens come in families, one per login: a refresh marks the presented
token used (compare-and-set, so two concurrent uses cannot both win) and
issues the next token of the same family. Presenting a used token again means
two parties hold it: the family record is deleted, which ends every token of
that login (RFC 9700's refresh-token rotation with reuse detection). A
revoked device's tokens stop working because every refresh re-reads the
device record from the store.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import nats.js.errors
from nats.js.kv import KeyValue

from xchat.auth import deletion, devicelists
from xchat.auth.keylog import KeyLog
from xchat.auth.provisioning import Provisioning
from xchat.core.devices import DeviceDirectory, DeviceRecord
from xchat.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted, Unauthenticated
from xchat.core.ids import ED25519_PUBLIC_BYTES, ED25519_SIGNATURE_BYTES, AccountId, DeviceId, exact_length, new_device_id
from xchat.core.signatures import verify_signature
from xchat.core.store import BUCKET_ACCOUNTS, BUCKET_CHALLENGES, BUCKET_DEVICES, BUCKET_REFRESH, Store
from xchat.core.tokens import TokenSigner
from xchat.statements import DeviceListBody, MalformedDeviceList, login_statement, register_statement

MAX_DEVICES_PER_ACCOUNT = 16
NONCE_BYTES = 32
CHALLENGE_LIFETIME_MS = 60_000
MAX_REFRESH_TOKEN_CHARS = 128
CAS_ATTEMPTS = 20
FAMILY_PREFIX = "family."
# SHA-256 of a delivery access key (xchat.relay.sealed).
DELIVERY_VERIFIER_BYTES = 32

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    access_expires_at_ms: int
    refresh_token: str
    refresh_expires_at_ms: int
    account: AccountId
    device: DeviceId


def _now_ms() -> int:
    return int(time.time() * 1000)


class Accounts:
    def __init__(
        self, store: Store, signer: TokenSigner, *, refresh_lifetime_s: int, keylog: KeyLog | None = None
    ) -> None:
        # Key transparency (docs/adr/0014): every stored device list is appended here.
        self.keylog = keylog
        self._accounts: KeyValue = store.bucket(BUCKET_ACCOUNTS)
        self._devices_kv: KeyValue = store.bucket(BUCKET_DEVICES)
        self._devices = DeviceDirectory(self._devices_kv)
        self._challenges: KeyValue = store.bucket(BUCKET_CHALLENGES)
        # Linking devices: ciphertext only, in auth's short-lived bucket (xchat.auth.provisioning).
        self.provisioning = Provisioning(self._challenges)
        self._refresh: KeyValue = store.bucket(BUCKET_REFRESH)
        self._signer = signer
        self._refresh_lifetime_ms = refresh_lifetime_s * 1000
        self.name_hold_s = deletion.NAME_HOLD_S

    @staticmethod
    def _check_key(identity_key: bytes, signature: bytes, account: AccountId) -> None:
        exact_length(identity_key, ED25519_PUBLIC_BYTES, field="identity_key")
        exact_length(signature, ED25519_SIGNATURE_BYTES, field="signature")
        if not verify_signature(identity_key, register_statement(account, identity_key), signature):
            raise InvalidArgument("signature does not verify with identity_key over the register statement")

    async def register(
        self,
        account: AccountId,
        identity_key: bytes,
        signature: bytes,
        *,
        account_key: bytes = b"",
        account_key_signature: bytes = b"",
    ) -> DeviceId:
        self._check_key(identity_key, signature, account)
        record: dict[str, object] = {"v": 1, "created_at_ms": _now_ms()}
        if account_key or account_key_signature:
            devicelists.check_account_key(account, account_key, account_key_signature)
            record["account_key"] = base64.b64encode(account_key).decode()
        device = await self._create_device(account, identity_key)
        body = json.dumps({**record, "devices": [device]}).encode()
        try:
            await self._accounts.create(account, body)
        except nats.js.errors.KeyWrongLastSequenceError:
            try:
                await self._reuse_name(account, body)  # a deleted account's name, once its hold ended
            except BaseException:
                await self._forget_device(device)
                raise
        except BaseException:
            await self._forget_device(device)
            raise
        return device

    async def _reuse_name(self, account: AccountId, body: bytes) -> None:
        try:
            entry = await self._accounts.get(account)
        except nats.js.errors.KeyNotFoundError as exc:  # deleted by the operator meanwhile: try again
            raise ResourceExhausted(f"account {account!r} changed while registering; retry") from exc
        deletion.check_released(json.loads(entry.value or b"{}"), account)
        try:
            await self._accounts.update(account, body, last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise AlreadyExists(f"account {account!r} is already registered; choose another name") from exc

    async def delete_account(self, account: AccountId, signature: bytes) -> tuple[list[DeviceId], int]:
        """Replaces the record by a tombstone, then revokes every device (``xchat.auth.deletion``);
        returns the devices and the end of the name hold. The tombstone lists no device, so from its
        write on no device of the account logs in or refreshes; revoking ends their access tokens too."""
        for _ in range(CAS_ATTEMPTS):
            entry = await self._get_account(account)
            raw = json.loads(entry.value or b"{}")
            deletion.check_signature(raw, account, signature)
            dead = deletion.tombstone(raw, hold_s=self.name_hold_s)
            try:
                await self._accounts.update(account, json.dumps(dead).encode(), last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            devices = [DeviceId(d) for d in dead["deleted_devices"]]
            for device in devices:
                await self.revoke(account, device)
            return devices, int(dead["hold_until_ms"])
        raise ResourceExhausted("too much concurrent change on this account; retry")

    async def _forget_device(self, device: DeviceId) -> None:
        """Removes a device record no account lists; a failure leaves an orphan that cannot log in."""
        try:
            await self._devices_kv.purge(device)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            log.warning("could not remove the record of unregistered device %s", device)

    async def add_device(
        self, account: AccountId, identity_key: bytes, signature: bytes, account_signature: bytes = b""
    ) -> DeviceId:
        self._check_key(identity_key, signature, account)
        for _ in range(CAS_ATTEMPTS):
            entry = await self._get_account(account)
            raw = json.loads(entry.value or b"{}")
            devicelists.check_admission(raw, account, identity_key, account_signature)
            if len(raw["devices"]) >= MAX_DEVICES_PER_ACCOUNT:
                raise ResourceExhausted(f"account {account!r} already has {MAX_DEVICES_PER_ACCOUNT} devices")
            device = await self._create_device(account, identity_key)
            raw["devices"].append(device)
            try:
                await self._accounts.update(account, json.dumps(raw).encode(), last=entry.revision)
                return device
            except nats.js.errors.KeyWrongLastSequenceError:
                await self._forget_device(device)
            except BaseException:
                await self._forget_device(device)
                raise
        raise ResourceExhausted("too much concurrent change on this account; retry")

    async def _create_device(self, account: AccountId, identity_key: bytes) -> DeviceId:
        device = new_device_id()
        record = DeviceRecord(device, account, identity_key, revoked=False, created_at_ms=_now_ms())
        await self._devices_kv.create(device, record.encode())
        return device

    async def _get_account(self, account: AccountId):  # type: ignore[no-untyped-def]
        try:
            entry = await self._accounts.get(account)
        except nats.js.errors.KeyNotFoundError as exc:
            raise NotFound(f"account {account!r} does not exist") from exc
        if deletion.is_deleted(json.loads(entry.value or b"{}")):
            raise NotFound(f"account {account!r} does not exist (it was deleted)")
        return entry

    async def list_devices(self, account: AccountId) -> list[DeviceRecord]:
        entry = await self._get_account(account)
        records = []
        for device in json.loads(entry.value or b"{}")["devices"]:
            record, _ = await self._devices.get(DeviceId(device))
            if record is not None:
                records.append(record)
        return records

    async def _usable_device(self, device: DeviceId) -> DeviceRecord:
        record, _ = await self._devices.get(device)
        if record is None:
            raise Unauthenticated(f"device {device} is not registered")
        if record.revoked:
            raise Unauthenticated(f"device {device} has been revoked; register it again")
        entry = await self._get_account(record.account)
        if device not in json.loads(entry.value or b"{}")["devices"]:
            raise Unauthenticated(f"device {device} is not registered")
        return record

    async def challenge(self, device: DeviceId) -> tuple[bytes, int]:
        # Issued for any well-formed id, registered or not, so that the answer
        # does not reveal which device ids exist.
        nonce = secrets.token_bytes(NONCE_BYTES)
        expires = _now_ms() + CHALLENGE_LIFETIME_MS
        await self._challenges.create(f"{device}.{nonce.hex()}", str(expires).encode())
        return nonce, expires

    async def login(self, device: DeviceId, nonce: bytes, signature: bytes) -> Tokens:
        exact_length(nonce, NONCE_BYTES, field="nonce")
        exact_length(signature, ED25519_SIGNATURE_BYTES, field="signature")
        key = f"{device}.{nonce.hex()}"
        try:
            entry = await self._challenges.get(key)
        except nats.js.errors.KeyNotFoundError as exc:
            raise Unauthenticated("login nonce is unknown, expired or already used: request a new challenge") from exc
        try:
            # Consume the nonce first: a failed or concurrent attempt cannot reuse it.
            await self._challenges.delete(key, last=entry.revision)
        except nats.js.errors.APIError as exc:
            raise Unauthenticated("login nonce was already used: request a new challenge") from exc
        if int(entry.value or b"0") < _now_ms():
            raise Unauthenticated("login nonce has expired: request a new challenge")
        record = await self._usable_device(device)
        if not verify_signature(record.identity_key, login_statement(device, nonce), signature):
            raise Unauthenticated("login signature does not verify with the device identity key")
        return await self._issue(record)

    async def _issue(self, record: DeviceRecord, family: str | None = None) -> Tokens:
        access, access_expires = self._signer.issue(record.account, record.device)
        refresh = secrets.token_urlsafe(32)
        refresh_expires = _now_ms() + self._refresh_lifetime_ms
        if family is None:  # a login starts a family
            family = secrets.token_hex(16)
            await self._refresh.create(FAMILY_PREFIX + family, json.dumps({"device": record.device}).encode())
        body = {"account": record.account, "device": record.device, "exp": refresh_expires, "family": family}
        await self._refresh.create(_refresh_key(refresh), json.dumps(body).encode())
        return Tokens(access, access_expires, refresh, refresh_expires, record.account, record.device)

    async def _end_family(self, family: str | None) -> None:
        if family:
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                await self._refresh.purge(FAMILY_PREFIX + family)

    async def refresh(self, refresh_token: str) -> Tokens:
        if not refresh_token or len(refresh_token) > MAX_REFRESH_TOKEN_CHARS:
            raise Unauthenticated("refresh token is malformed")
        key = _refresh_key(refresh_token)
        try:
            entry = await self._refresh.get(key)
        except nats.js.errors.KeyNotFoundError as exc:
            raise Unauthenticated("refresh token is unknown or expired: log in again") from exc
        raw = json.loads(entry.value or b"{}")
        # Tokens issued before families existed have none: their refresh starts one.
        family = str(raw["family"]) if raw.get("family") else None
        if raw.get("used"):
            await self._end_family(family)
            raise Unauthenticated("refresh token was already used: every token of that login is revoked; log in again")
        try:
            await self._refresh.update(key, json.dumps({**raw, "used": True}).encode(), last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            await self._end_family(family)  # a concurrent use of the same token: reuse too
            raise Unauthenticated("refresh token was already used: every token of that login is revoked; log in again") from exc
        if int(raw["exp"]) < _now_ms():
            raise Unauthenticated("refresh token has expired: log in again")
        if family is not None:
            try:
                await self._refresh.get(FAMILY_PREFIX + family)
            except nats.js.errors.KeyNotFoundError as exc:
                raise Unauthenticated("this login was revoked (a refresh token was reused): log in again") from exc
        record = await self._usable_device(DeviceId(raw["device"]))
        return await self._issue(record, family)

    async def publish_device_list(self, account: AccountId, body: bytes, signature: bytes) -> int:
        """Stores a list signed by the account key (``xchat.auth.devicelists``); returns its version."""
        for _ in range(CAS_ATTEMPTS):
            entry = await self._get_account(account)
            raw = json.loads(entry.value or b"{}")
            stored = devicelists.signed_list(raw)
            if stored is not None and (stored.body, stored.signature) == (body, signature):
                # A retry of a list already stored (its log append may have failed): append again
                # (de-duplicated by the log) and answer as the first time did.
                await self._append(account, raw, stored)
                return stored.version
            updated = await devicelists.checked_list(raw, account, body, signature, self._devices)
            try:
                await self._accounts.update(account, devicelists.encode_record(updated), last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another change: check the list again against what won
            listed = devicelists.signed_list(updated)
            assert listed is not None
            await self._append(account, updated, listed)
            return listed.version
        raise ResourceExhausted("too much concurrent change on this account; retry")

    async def _append(self, account: AccountId, raw: dict[str, Any], listed: devicelists.SignedList) -> None:
        if self.keylog is not None:
            key = devicelists.account_key(raw)
            await self.keylog.append(account, key, listed.version, listed.body, listed.signature)

    async def signed_device_list(self, account: AccountId) -> tuple[bytes, devicelists.SignedList | None]:
        """The account key (b"": none) and the latest signed list (None: none yet)."""
        raw = json.loads((await self._get_account(account)).value or b"{}")
        return devicelists.account_key(raw), devicelists.signed_list(raw)

    async def revoke_listed(
        self, caller_account: AccountId, device: DeviceId, body: bytes, signature: bytes
    ) -> None:
        """Revokes ``device``; an account with an account key must first publish a list without it."""
        account_key, _ = await self.signed_device_list(caller_account)
        if account_key:
            if not body:
                raise PermissionDenied(
                    "this account has an account key: RevokeDevice needs device_list, the next list "
                    "signed by the account key without that device (Client.revoke_device does it)"
                )
            record, _ = await self._devices.get(device)
            if record is None or record.account != caller_account:
                raise PermissionDenied("you can only revoke devices of your own account")
            try:
                listed = DeviceListBody.decode(body).key_of(device) is not None
            except MalformedDeviceList as exc:
                raise InvalidArgument(f"device_list.body: {exc}") from exc
            if listed:
                raise InvalidArgument(f"device_list still lists {device}: sign a list without it")
            await self.publish_device_list(caller_account, body, signature)
        await self.revoke(caller_account, device)

    async def revoke(self, caller_account: AccountId, device: DeviceId) -> None:
        for _ in range(CAS_ATTEMPTS):
            record, revision = await self._devices.get(device)
            if record is None:
                raise NotFound(f"device {device} does not exist")
            if record.account != caller_account:
                raise PermissionDenied("you can only revoke devices of your own account")
            if record.revoked:
                return
            try:
                await self._devices_kv.update(device, record.revoke().encode(), last=revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise FailedPrecondition("device record kept changing; retry")


    async def set_delivery_verifier(self, device: DeviceId, verifier: bytes, *, sealed_from_anyone: bool = False) -> None:
        """Stores (or with b"" removes) the device's delivery verifier and its opt-in to sealed sends
        from anyone (unrestricted unidentified delivery); compare-and-set on its record."""
        if verifier:
            exact_length(verifier, DELIVERY_VERIFIER_BYTES, field="verifier")
        for _ in range(CAS_ATTEMPTS):
            record, revision = await self._devices.get(device)
            if record is None or record.revoked:
                raise Unauthenticated(f"device {device} is not registered or has been revoked")
            try:
                updated = record.with_verifier(verifier, sealed_from_anyone=sealed_from_anyone)
                await self._devices_kv.update(device, updated.encode(), last=revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise FailedPrecondition("device record kept changing; retry")


def _refresh_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
