"""Who this device is: its account and device id, its registration, and what vouches for it.

``Registration`` reads the account and device id the server gave at
``register`` (SQLite ``meta`` rows ``account``, ``device_id``), performs the
registration itself (identity key, account key, first signed device list,
prekeys, delivery verifier) and answers the questions the session book and
the receive path ask about identities (``Client`` wires them in):

- ``me``: (account, device id) once registered, bound into the PQXDH AD of new sessions;
- ``own_certificate``: this device's sender certificate for the sealed layer (``_devices`` issues it);
- ``directory_key``: the identity key an account's signed device list gives one of its devices;
- ``account_safety_number``: the safety number over both account keys;
- ``own_account_key``: for key transparency's check of our own account (``_transparency``).
"""

from __future__ import annotations

import time

from xchat.client._devices import Devices
from xchat.client._prekeys import DEFAULT_PQ_PREKEYS, Prekeys
from xchat.client._sessions import SessionBook
from xchat.client._state import LocalState
from xchat.client._tokens import Tokens
from xchat.client._transport import Transport
from xchat.client.crypto import safety_number
from xchat.client.errors import NotRegistered, RequestRejected
from xchat.statements import register_statement
from xchat.v1 import auth_pb2, auth_pb2_grpc


class Registration:
    def __init__(
        self,
        state: LocalState,
        book: SessionBook,
        transport: Transport,
        tokens: Tokens,
        *,
        devices: Devices,
        prekeys: Prekeys,
    ) -> None:
        self._state = state
        self._book = book
        self._transport = transport
        self._tokens = tokens
        self._devices = devices
        self._prekeys = prekeys

    @property
    def account(self) -> str:
        value = self._state.get_meta("account")
        if value is None:
            raise NotRegistered("this client has no account yet: call register()")
        return value.decode()

    @property
    def device_id(self) -> str:
        value = self._state.get_meta("device_id")
        if value is None:
            raise NotRegistered("this client has no device yet: call register()")
        return value.decode()

    def sender(self) -> tuple[str, str]:
        """(account, device id); ``NotRegistered`` before ``register``."""
        return self.account, self.device_id

    def me(self) -> tuple[str, str] | None:
        """(account, device id) once registered: bound into the PQXDH AD of new sessions."""
        account, device = self._state.get_meta("account"), self._state.get_meta("device_id")
        return (account.decode(), device.decode()) if account is not None and device is not None else None

    async def register(self, account: str, *, one_time_prekeys: int) -> str:
        """Creates the account with this device, logs in and publishes prekeys; returns the device id."""
        if self._state.get_meta("device_id") is not None:
            if not self._devices.published():  # an earlier register() stopped after Register
                await self._devices.publish_first(self.account, self.device_id, self._book.identity.public)
            return self.device_id
        identity = self._book.ensure_identity()
        account_key = self._devices.ensure_account_key()
        signature = identity.sign(register_statement(account, identity.public))
        request = auth_pb2.RegisterRequest(
            account=account,
            identity_key=identity.public,
            signature=signature,
            account_key=account_key.public,
            account_key_signature=account_key.proof(account),
        )
        reply: auth_pb2.RegisterResponse = await self._transport.call(
            lambda ch, t: auth_pb2_grpc.AuthStub(ch).Register(request, timeout=t), service="auth"
        )
        self._state.set_meta("account", reply.account.encode())
        self._state.set_meta("device_id", reply.device_id.encode())
        await self._devices.publish_first(reply.account, reply.device_id, identity.public)
        await self._prekeys.publish(one_time=one_time_prekeys, pq=DEFAULT_PQ_PREKEYS, rotate_signed=True)
        await self.register_delivery_key()
        return reply.device_id

    async def register_delivery_key(self) -> None:
        """This device's delivery verifier (``_delivery``), registered with auth."""
        verifier = self._book.delivery.verifier()
        request = auth_pb2.SetDeliveryVerifierRequest(
            verifier=verifier, sealed_from_anyone=self._book.delivery.from_anyone()
        )
        await self._tokens.authed(
            lambda ch, t, md: auth_pb2_grpc.AuthStub(ch).SetDeliveryVerifier(request, timeout=t, metadata=md),
            service="auth",
        )
        self._book.delivery.mark_registered(verifier)

    def own_certificate(self) -> bytes:
        """This device's sender certificate for the sealed layer (b"" before it can have one)."""
        me = self.me()
        if me is None:
            return b""
        return self._devices.certificate(me[0], me[1], self._book.identity.public, int(time.time() * 1000))

    async def directory_key(self, account: str, device: str) -> bytes | None:
        """The identity key ``account``'s signed device list gives ``device`` (None: not listed or untrusted)."""
        try:
            return await self._devices.listed_key(account, device)
        except RequestRejected:
            return None

    def account_safety_number(self, our_account: str, peer_account: str) -> str | None:
        ours, theirs = self._devices.account_key, self._devices.pinned_key(peer_account)
        if ours is None or theirs is None:
            return None  # an account without an account key: per device (first device with a session)
        return safety_number(ours.public, our_account, theirs, peer_account)

    def own_account_key(self) -> tuple[str | None, bytes | None]:
        raw = self._state.get_meta("account")
        key = self._devices.account_key
        return (raw.decode() if raw is not None else None), (key.public if key is not None else None)
