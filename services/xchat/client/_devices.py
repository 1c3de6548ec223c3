"""Account identity and linked devices in the SDK (docs/adr/0011).

Owns the account key (ours: SQLite ``meta`` row ``account_key``, its seed),
the device lists of the accounts we talk to, and the linking flow:

- **Peers' lists** are trusted only when signed by the peer's account key,
  pinned on first use (``acct_key:<account>``): another key is refused
  ("account_key_changed": an account key is set once per account name, so a
  new one is the directory lying). The highest version verified is pinned
  with its body (``acct_list:<account>``): an older one, or another list with
  the same version, is refused ("rollback"). The send path encrypts only to
  listed devices whose bundle carries the listed key; the receive path
  accepts a new session only from a listed device with the listed key.
- **Our own list** is signed here, by any linked device (each holds the
  account key): version 1 after ``register``, the next version to add
  (``link``) or remove (``revoke``) a device.
- **Our sender certificate** (``crypto.certificates``): issued here with the
  account key for this device (``sender_cert``), carrying the version of our
  pinned own list, renewed when less than a week of its 30 days is left.
- **Linking**: the linking device creates the new device's identity, has
  auth admit it (the account key's signature), publishes the list with it,
  and puts the provisioning message (account, device id, identity and account
  key seeds, profile key) encrypted under a secret only the link code carries.
  The new device takes it once, anonymously, within 120 s.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from xchat.client._state import LocalState
from xchat.client._tokens import Tokens
from xchat.client._transport import Transport
from xchat.client.crypto import CryptoError, IdentityKeyPair
from xchat.client.crypto.certificates import CertificateError, SenderCertificate, issue_certificate
from xchat.client.crypto.account import (
    AccountKey,
    DeviceListSignatureError,
    SignedDeviceList,
    open_provisioning,
    seal_provisioning,
    verify_device_list,
)
from xchat.client.errors import LinkFailed, NotRegistered, RequestRejected, UntrustedDeviceList
from xchat.client.messages import DeviceListRejected, SecurityEvent
from xchat.statements import DeviceListBody, register_statement
from xchat.v1 import auth_pb2, auth_pb2_grpc

LINK_CODE_PREFIX = "xchat-link-1:"
PROVISIONING_FORMAT = 1
# Tries to sign the next list when other devices change it at the same moment.
LIST_UPDATE_ATTEMPTS = 5
RENDEZVOUS_BYTES = 16
LINK_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class LinkedDevice:
    """One device of our account as its signed device list names it."""

    device_id: str
    identity_key: bytes
    this_device: bool


class Devices:
    def __init__(
        self,
        state: LocalState,
        transport: Transport,
        tokens: Tokens,
        *,
        on_event: Callable[[SecurityEvent], None],
    ) -> None:
        self._state = state
        self._transport = transport
        self._tokens = tokens
        self._on_event = on_event
        # Pinned lists parsed once (the receive path asks on every message); written through by ``trust``.
        self._pinned: dict[str, DeviceListBody | None] = {}
        # Our sender certificate, parsed once, and its bytes (``certificate``: every sealed message carries them).
        self._certificate: SenderCertificate | None = None
        self._certificate_bytes = b""
        # Key transparency (``_transparency``, set by the Client): checks each fetched list against the log.
        self.transparency: Callable[[str, bytes, bytes, bytes], Awaitable[None]] | None = None

    # -- our account key ---------------------------------------------------

    @property
    def account_key(self) -> AccountKey | None:
        seed = self._state.get_meta("account_key")
        return AccountKey(seed) if seed is not None else None

    def ensure_account_key(self) -> AccountKey:
        key = self.account_key
        if key is None:
            key = AccountKey.generate()
            self._state.set_meta("account_key", key.seed)
        return key

    def _own_key(self) -> AccountKey:
        key = self.account_key
        if key is None:
            raise NotRegistered("this client has no account key: register() or open_linked() first")
        return key

    def pinned_key(self, account: str) -> bytes | None:
        """The account key pinned for ``account`` (ours for our own account)."""
        return self._state.get_meta(f"acct_key:{account}")

    # -- trusting a list ---------------------------------------------------

    def _refuse(self, account: str, problem: str, detail: str) -> UntrustedDeviceList:
        self._on_event(DeviceListRejected(account, None, problem, detail))
        return UntrustedDeviceList(account, problem, detail)

    def trust(self, account: str, account_key: bytes, body: bytes, signature: bytes) -> SignedDeviceList:
        """The verified list, pinned; ``UntrustedDeviceList`` (and an event) otherwise."""
        if not account_key or not body:
            raise self._refuse(account, "unsigned", "the directory serves no account key or no signed device list")
        pinned = self.pinned_key(account)
        if pinned is not None and pinned != account_key:
            raise self._refuse(account, "account_key_changed", "the directory serves another account key than the pinned one")
        try:
            verified = verify_device_list(account_key, account, body, signature)
        except (DeviceListSignatureError, CryptoError) as exc:
            raise self._refuse(account, "signature", str(exc)) from exc
        known = self._state.get_meta(f"acct_list:{account}")
        if known is not None:
            known_version = DeviceListBody.decode(known).version
            if verified.version < known_version or (verified.version == known_version and body != known):
                raise self._refuse(
                    account, "rollback", f"version {verified.version} after version {known_version} was verified"
                )
        if pinned != account_key or known != body:  # unchanged: no write (each refresh would re-seal both)
            with self._state.transaction():
                self._state.set_meta(f"acct_key:{account}", account_key)
                self._state.set_meta(f"acct_list:{account}", body)
        self._pinned[account] = verified.devices
        return verified

    def pinned_list(self, account: str) -> DeviceListBody | None:
        """The latest list of ``account`` verified here (None: never fetched)."""
        if account not in self._pinned:
            body = self._state.get_meta(f"acct_list:{account}")
            self._pinned[account] = DeviceListBody.decode(body) if body is not None else None
        return self._pinned[account]

    def pinned_version(self, account: str) -> int | None:
        """The version of the pinned list of ``account`` (None: never fetched)."""
        listed = self.pinned_list(account)
        return listed.version if listed is not None else None

    def certificate(self, account: str, device: str, identity_key: bytes, now_ms: int) -> bytes:
        """Our sender certificate (b"": none can be issued yet: no account key, or our pinned list lacks us).

        Issued with the account key on first use and renewed a week before it
        expires; its list version is our pinned own list's (one naming this device).
        """
        current = self._certificate
        if current is None:
            stored = self._state.get_meta("sender_cert")
            try:
                current = SenderCertificate.from_bytes(stored) if stored is not None else None
            except CertificateError:
                current = None  # unreadable: issue a new one
        if current is not None and current.identity_key == identity_key and not current.expiring(now_ms):
            if current is not self._certificate:
                self._certificate, self._certificate_bytes = current, current.to_bytes()
            return self._certificate_bytes
        key, listed = self.account_key, self.pinned_list(account)
        if key is None or listed is None or listed.key_of(device) != identity_key:
            return b""
        issued = issue_certificate(
            key.seed, account=account, device=device, identity_key=identity_key, list_version=listed.version, now_ms=now_ms
        )
        raw = issued.to_bytes()
        self._state.set_meta("sender_cert", raw)
        self._certificate, self._certificate_bytes = issued, raw
        return raw

    def lists(self, account: str, device: str) -> bool:
        """False when the pinned list of ``account`` does not name ``device`` (True: it does, or none pinned)."""
        listed = self.pinned_list(account)
        return listed is None or listed.key_of(device) is not None

    async def fetch(self, account: str) -> SignedDeviceList:
        """``account``'s device list from the directory, verified and pinned."""
        request = auth_pb2.ListDevicesRequest(account=account)
        reply: auth_pb2.ListDevicesResponse = await self._tokens.authed(
            lambda ch, t, md: auth_pb2_grpc.AuthStub(ch).ListDevices(request, timeout=t, metadata=md), service="auth"
        )
        key, body, signature = bytes(reply.account_key), bytes(reply.device_list.body), bytes(reply.device_list.signature)
        prior = self.pinned_key(account), self._state.get_meta(f"acct_list:{account}")
        listed = self.trust(account, key, body, signature)
        if self.transparency is not None:
            try:
                await self.transparency(account, key, body, signature)  # docs/adr/0014
            except UntrustedDeviceList:
                self._unpin(account, *prior)  # not in the log: the directory's word is not kept
                raise
        return listed

    def _unpin(self, account: str, key: bytes | None, body: bytes | None) -> None:
        with self._state.transaction():
            for row, value in ((f"acct_key:{account}", key), (f"acct_list:{account}", body)):
                if value is None:
                    self._state.delete_meta(row)
                else:
                    self._state.set_meta(row, value)
        self._pinned.pop(account, None)

    def is_listed(self, account: str, listed: SignedDeviceList, device: str, identity_key: bytes) -> bool:
        """True when the signed list names ``device`` with ``identity_key``; an event otherwise.

        Checked before a bundle's own signatures: a bundle under another key is
        the directory's substitution, whatever it signs.
        """
        key = listed.devices.key_of(device)
        if key is None:
            self._on_event(DeviceListRejected(account, device, "unlisted", "not in the signed device list: no session"))
            return False
        if key != identity_key:
            self._on_event(
                DeviceListRejected(account, device, "key_mismatch", "the directory's identity key differs from the signed list")
            )
            return False
        return True

    async def listed_key(self, account: str, device: str) -> bytes | None:
        """The identity key the signed list of ``account`` gives ``device`` (None: refused, with an event).

        A device the pinned list already names is answered from it, without asking the
        directory: a lookup right after a sealed first message would tell auth who wrote
        to us. A device it does not name (linked since, or planted) is looked up.
        """
        pinned = self.pinned_list(account)
        if pinned is not None and pinned.key_of(device) is not None:
            return pinned.key_of(device)
        try:
            listed = await self.fetch(account)
        except UntrustedDeviceList:
            return None
        key = listed.devices.key_of(device)
        if key is None:
            self._on_event(DeviceListRejected(account, device, "unlisted", "a sender device not in the signed list"))
        return key

    # -- our own list -------------------------------------------------------

    async def _publish(self, listed: SignedDeviceList) -> None:
        request = auth_pb2.PublishDeviceListRequest(
            device_list=auth_pb2.SignedDeviceList(body=listed.body, signature=listed.signature)
        )
        await self._tokens.authed(
            lambda ch, t, md: auth_pb2_grpc.AuthStub(ch).PublishDeviceList(request, timeout=t, metadata=md),
            service="auth",
        )

    async def publish_first(self, account: str, device: str, identity_key: bytes) -> None:
        """Version 1, right after ``register``: this device alone."""
        key = self._own_key()
        self._state.set_meta(f"acct_key:{account}", key.public)
        listed = key.sign_list(account, 1, {device: identity_key})
        await self._publish(listed)
        self.trust(account, key.public, listed.body, listed.signature)
        self._state.set_meta("device_list_published", b"1")

    def published(self) -> bool:
        return self._state.get_meta("device_list_published") is not None

    async def own(self, account: str) -> SignedDeviceList:
        """Our account's list: pinned to our own account key since ``register``/``open_linked``."""
        return await self.fetch(account)

    async def devices(self, account: str, this_device: str) -> list[LinkedDevice]:
        listed = await self.own(account)
        return [LinkedDevice(d, k, d == this_device) for d, k in listed.devices.devices]

    async def _next_list(
        self,
        account: str,
        change: Callable[[dict[str, bytes]], dict[str, bytes]],
        store: Callable[[SignedDeviceList], Awaitable[object]],
    ) -> SignedDeviceList:
        """Signs ``change`` of the current list as the next version and has ``store`` send it.

        Two devices changing the list at once sign the same version; auth keeps
        one (compare-and-set) and refuses the other (FAILED_PRECONDITION), which
        reads the list again and signs on top, at most ``LIST_UPDATE_ATTEMPTS`` times.
        """
        key = self._own_key()
        for attempt in range(LIST_UPDATE_ATTEMPTS):
            current = await self.own(account)
            listed = key.sign_list(account, current.version + 1, change(dict(current.devices.devices)))
            try:
                await store(listed)
            except RequestRejected as exc:
                if exc.code != "FAILED_PRECONDITION" or attempt == LIST_UPDATE_ATTEMPTS - 1:
                    raise
                continue
            self.trust(account, key.public, listed.body, listed.signature)
            return listed
        raise AssertionError("unreachable")

    async def revoke(self, account: str, device: str) -> None:
        async def store(listed: SignedDeviceList) -> object:
            request = auth_pb2.RevokeDeviceRequest(
                device_id=device, device_list=auth_pb2.SignedDeviceList(body=listed.body, signature=listed.signature)
            )
            return await self._tokens.authed(
                lambda ch, t, md: auth_pb2_grpc.AuthStub(ch).RevokeDevice(request, timeout=t, metadata=md), service="auth"
            )

        await self._next_list(account, lambda devices: {d: k for d, k in devices.items() if d != device}, store)

    # -- linking ------------------------------------------------------------

    async def link(self, account: str, profile_key: bytes) -> tuple[str, str]:
        """Admits a new device and leaves its provisioning message; returns (link code, new device id)."""
        key = self._own_key()
        identity = IdentityKeyPair.generate()
        add = auth_pb2.AddDeviceRequest(
            identity_key=identity.public,
            signature=identity.sign(register_statement(account, identity.public)),
            account_signature=key.admit(account, identity.public),
        )
        reply: auth_pb2.RegisterResponse = await self._tokens.authed(
            lambda ch, t, md: auth_pb2_grpc.AuthStub(ch).AddDevice(add, timeout=t, metadata=md), service="auth"
        )
        device = reply.device_id
        await self._next_list(account, lambda devices: {**devices, device: identity.public}, self._publish)
        payload = json.dumps(
            {
                "v": PROVISIONING_FORMAT,
                "account": account,
                "device_id": device,
                "identity": identity.to_bytes().hex(),
                "account_key": key.seed.hex(),
                "profile_key": profile_key.hex(),
            }
        ).encode()
        rendezvous, secret = secrets.token_bytes(RENDEZVOUS_BYTES), secrets.token_bytes(LINK_SECRET_BYTES)
        put = auth_pb2.PutProvisioningRequest(
            rendezvous_id=rendezvous, ciphertext=seal_provisioning(secret, rendezvous, payload)
        )
        await self._tokens.authed(
            lambda ch, t, md: auth_pb2_grpc.AuthStub(ch).PutProvisioning(put, timeout=t, metadata=md), service="auth"
        )
        code = LINK_CODE_PREFIX + base64.urlsafe_b64encode(rendezvous + secret).decode().rstrip("=")
        return code, device


async def redeem(state: LocalState, transport: Transport, code: str) -> str:
    """Takes and opens the provisioning message of ``code`` into a fresh state; returns the device id."""
    if state.get_meta("device_id") is not None:
        raise LinkFailed("this state file already belongs to a device: open_linked needs a new one")
    if not code.startswith(LINK_CODE_PREFIX):
        raise LinkFailed(f"not a link code (it starts with {LINK_CODE_PREFIX!r})")
    try:
        raw = base64.urlsafe_b64decode(code[len(LINK_CODE_PREFIX) :] + "==")
    except (binascii.Error, ValueError) as exc:
        raise LinkFailed("the link code is garbled") from exc
    if len(raw) != RENDEZVOUS_BYTES + LINK_SECRET_BYTES:
        raise LinkFailed("the link code is garbled (wrong length)")
    rendezvous, secret = raw[:RENDEZVOUS_BYTES], raw[RENDEZVOUS_BYTES:]
    request = auth_pb2.TakeProvisioningRequest(rendezvous_id=rendezvous)
    try:
        reply: auth_pb2.TakeProvisioningResponse = await transport.call(
            lambda ch, t: auth_pb2_grpc.AuthStub(ch).TakeProvisioning(request, timeout=t), service="auth"
        )
    except RequestRejected as exc:
        raise LinkFailed(f"the link code was not accepted: {exc.message}") from exc
    try:
        payload = json.loads(open_provisioning(secret, rendezvous, bytes(reply.ciphertext)))
        if payload.get("v") != PROVISIONING_FORMAT:
            raise LinkFailed(f"provisioning format {payload.get('v')!r} is not supported by this SDK")
        identity = IdentityKeyPair.from_bytes(bytes.fromhex(payload["identity"]))
        account_key = AccountKey(bytes.fromhex(payload["account_key"]))
        profile_key = bytes.fromhex(payload["profile_key"])
        account, device = str(payload["account"]), str(payload["device_id"])
    except (CryptoError, ValueError, KeyError, TypeError) as exc:
        raise LinkFailed("the provisioning message does not open with this code (tampered with, or another code)") from exc
    with state.transaction():
        state.set_meta("identity", identity.to_bytes())
        state.set_meta("account_key", account_key.seed)
        state.set_meta(f"acct_key:{account}", account_key.public)
        state.set_meta("profile_key", profile_key)
        state.set_meta("account", account.encode())
        state.set_meta("device_id", device.encode())
        state.set_meta("device_list_published", b"1")
    return device
