"""The xchat client SDK: one device of one account.

    client = await Client.open("alice.db", ["127.0.0.1:50051", "127.0.0.1:50052"])
    await client.register("alice")            # identity, device, prekeys: once
    await client.send("bob", "hello")         # encrypted here; acked = durable
    async for message in client.messages():   # backlog, then live; reconnects
        print(message.sender_account, message.text)
        await client.ack(message)             # processed: never delivered again
    await client.close()

All encryption happens here (PQXDH + Double Ratchet from ``xchat.client.crypto``);
the servers see recipients and ciphertext only. State lives in SQLite, so a
restarted client continues its sessions, resends its outbox and never shows
the app a message twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar
from pathlib import Path

import grpc
import grpc.aio

from xchat.client import _codec
from xchat.client._sessions import SessionBook
from xchat.client._state import InboxItem, LocalState, OutboxItem
from xchat.client._transport import RETRYABLE, Endpoint, Transport, metadata, rejected
from xchat.client.crypto import Payload
from xchat.client.errors import NotRegistered, RequestRejected, ServiceUnavailable
from xchat.client.messages import Failed, Message, SendReceipt
from xchat.statements import login_statement, register_statement
from xchat.v1 import auth_pb2, auth_pb2_grpc, keys_pb2, keys_pb2_grpc, mailbox_pb2, mailbox_pb2_grpc, relay_pb2, relay_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_ONE_TIME_PREKEYS = 50
DEFAULT_PQ_PREKEYS = 20
# Below this many one-time prekeys (of either kind) the SDK publishes more.
PREKEY_LOW_WATER = 10
# Renew the access token this long before it expires.
TOKEN_MARGIN_MS = 30_000
MAX_ACKS_PER_FRAME = 1000
# Envelopes per SendStream message: amortises gRPC's per-message cost.
SEND_BATCH = 128
RECONNECT_BACKOFF_S = (0.1, 0.3, 1.0, 2.0)
# A Sync stream torn down by a restarting server can end with CANCELLED, or INTERNAL
# ("Internal error from Core") / UNKNOWN from grpc-core; reconnecting is always safe
# (unacked envelopes come back), so the receive loop never ends on these.
STREAM_RECONNECT = {grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
T = TypeVar("T")


class Client:
    def __init__(self, state: LocalState, transport: Transport) -> None:
        self._state = state
        self._transport = transport
        self._book = SessionBook(state)
        self._access_token = ""
        self._access_expires_ms = 0
        self._acks: asyncio.Queue[int] = asyncio.Queue()
        self._closed = False
        self._lock = asyncio.Lock()
        self.backlog_done = asyncio.Event()
        self._top_up: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        state_path: Path | str,
        endpoints: Sequence[Endpoint],
        *,
        root_certificates: bytes | None = None,
        call_timeout: float = 5.0,
    ) -> Client:
        """Opens (or creates) the local state; ``endpoints`` are tried in order (home region first).

        Each endpoint is one address serving all four services, or a mapping
        ``{"auth": ..., "keys": ..., "relay": ..., "mailbox": ...}`` for one region.
        """
        return cls(LocalState(state_path), Transport(endpoints, root_certificates=root_certificates, call_timeout=call_timeout))

    # -- identity ------------------------------------------------------

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

    @property
    def endpoint(self) -> str:
        """The endpoint currently in use (changes on failover)."""
        return self._transport.endpoint

    @property
    def undecryptable(self) -> int:
        """Envelopes dropped because they could never be read (tampered, forged, not for us)."""
        return self._book.undecryptable

    async def register(self, account: str, *, one_time_prekeys: int = DEFAULT_ONE_TIME_PREKEYS) -> str:
        """Creates the account with this device, logs in and publishes prekeys; returns the device id."""
        if self._state.get_meta("device_id") is not None:
            return self.device_id
        identity = self._book.ensure_identity()
        signature = identity.sign(register_statement(account, identity.public))
        request = auth_pb2.RegisterRequest(account=account, identity_key=identity.public, signature=signature)
        reply: auth_pb2.RegisterResponse = await self._transport.call(
            lambda ch, t: auth_pb2_grpc.AuthStub(ch).Register(request, timeout=t), service="auth"
        )
        self._state.set_meta("account", reply.account.encode())
        self._state.set_meta("device_id", reply.device_id.encode())
        await self.publish_prekeys(one_time=one_time_prekeys, rotate_signed=True)
        return reply.device_id

    async def publish_prekeys(
        self, *, one_time: int = DEFAULT_ONE_TIME_PREKEYS, pq: int = DEFAULT_PQ_PREKEYS, rotate_signed: bool = False
    ) -> None:
        """Generates and uploads one-time prekeys (and a new signed prekey when ``rotate_signed``)."""
        request = _codec.upload_request(self._book.new_prekeys(one_time=one_time, pq=pq, rotate_signed=rotate_signed))
        await self._authed(
            lambda ch, t, md: keys_pb2_grpc.KeysStub(ch).UploadPrekeys(request, timeout=t, metadata=md), service="keys"
        )

    def safety_number(self, peer_account: str) -> str:
        """Digits to compare out of band with ``peer_account`` (first device with a session)."""
        return self._book.safety_number(our_account=self.account, peer_account=peer_account)

    # -- tokens --------------------------------------------------------

    async def _token(self) -> str:
        if self._access_token and self._access_expires_ms - TOKEN_MARGIN_MS > time.time() * 1000:
            return self._access_token
        async with self._lock:
            if self._access_token and self._access_expires_ms - TOKEN_MARGIN_MS > time.time() * 1000:
                return self._access_token
            await self._login()
        return self._access_token

    async def _login(self) -> None:
        identity = self._book.identity
        device = self.device_id
        refresh = self._state.get_meta("refresh_token")
        if refresh:
            request = auth_pb2.RefreshRequest(refresh_token=refresh.decode())
            try:
                reply = await self._transport.call(
                    lambda ch, t: auth_pb2_grpc.AuthStub(ch).Refresh(request, timeout=t), service="auth"
                )
                self._store_tokens(reply)
                return
            except RequestRejected:
                pass  # expired or used: log in with the identity key instead

        async def login(channel: grpc.aio.Channel, timeout: float) -> auth_pb2.TokenResponse:
            stub = auth_pb2_grpc.AuthStub(channel)
            challenge = await stub.Challenge(auth_pb2.ChallengeRequest(device_id=device), timeout=timeout)
            signature = identity.sign(login_statement(device, challenge.nonce))
            reply: auth_pb2.TokenResponse = await stub.Login(
                auth_pb2.LoginRequest(device_id=device, nonce=challenge.nonce, signature=signature), timeout=timeout
            )
            return reply

        self._store_tokens(await self._transport.call(login, service="auth"))

    def _store_tokens(self, reply: auth_pb2.TokenResponse) -> None:
        self._access_token = reply.access_token
        self._access_expires_ms = reply.access_expires_at_ms
        self._state.set_meta("refresh_token", reply.refresh_token.encode())

    async def _authed(
        self, invoke: Callable[[grpc.aio.Channel, float, tuple[tuple[str, Any], ...]], Awaitable[T]], *, service: str
    ) -> T:
        """A unary call with a valid token; logs in again once if the token was refused."""
        for attempt in range(2):
            token = await self._token()
            try:
                return await self._transport.call(lambda ch, t: invoke(ch, t, metadata(token)), service=service)
            except RequestRejected as exc:
                if exc.code != "UNAUTHENTICATED" or attempt:
                    raise
                self._access_token = ""
        raise AssertionError("unreachable")

    # -- sending -------------------------------------------------------

    async def _sessions_for(self, account: str) -> list[str]:
        devices = self._book.devices_with_sessions(account)
        if devices:
            return devices
        request = keys_pb2.FetchBundlesRequest(account=account)
        reply = await self._authed(
            lambda ch, t, md: keys_pb2_grpc.KeysStub(ch).FetchBundles(request, timeout=t, metadata=md), service="keys"
        )
        return self._book.start_sessions(account, [(pb.device_id, _codec.bundle(pb)) for pb in reply.bundles])

    def _encrypt(self, account: str, devices: list[str], body: bytes, content_type: str) -> list[OutboxItem]:
        return self._book.encrypt(
            sender=(self.account, self.device_id), account=account, devices=devices, body=body, content_type=content_type
        )

    async def send(self, account: str, body: bytes | str, *, content_type: str = "text/plain") -> list[SendReceipt]:
        """Encrypts ``body`` for each device of ``account`` and stores it durably; one receipt per device."""
        data = body.encode() if isinstance(body, str) else body
        items = self._encrypt(account, await self._sessions_for(account), data, content_type)
        ours = {(i.message_id, i.recipient_device) for i in items}
        receipts = []
        # Order per conversation: whatever an earlier send left queued (it failed
        # over, or the process restarted) is delivered first, with its own id.
        for item in self._state.pending_outbox():
            if (item.message_id, item.recipient_device) in ours:
                receipts.append(await self._deliver(item))
                continue
            try:
                await self._deliver(item)
            except RequestRejected as exc:
                log.warning("queued message %s was refused: %s", item.message_id.hex(), exc)
        return receipts

    async def _deliver(self, item: OutboxItem) -> SendReceipt:
        request = relay_pb2.SendRequest(
            recipient_device_id=item.recipient_device, message_id=item.message_id, ciphertext=item.ciphertext
        )
        try:
            result = await self._authed(
                lambda ch, t, md: relay_pb2_grpc.RelayStub(ch).Send(request, timeout=t, metadata=md), service="relay"
            )
        except RequestRejected:
            # Refused for good (unknown recipient, bad input): keeping it would block nothing but retry for ever.
            self._state.remove_outbox(item.message_id, item.recipient_device)
            raise
        self._state.remove_outbox(item.message_id, item.recipient_device)
        return SendReceipt(item.message_id, item.recipient_device, result.sequence, result.duplicate)

    async def flush_outbox(self) -> list[SendReceipt | Failed]:
        """Resends what a previous run encrypted but did not get acknowledged (same bytes, same ids)."""
        return await self._deliver_stream(self._state.pending_outbox())

    async def send_many(
        self, messages: Iterable[tuple[str, bytes | str]], *, content_type: str = "text/plain"
    ) -> list[SendReceipt | Failed]:
        """The streaming path: encrypts all, then sends them pipelined over one SendStream call."""
        items: list[OutboxItem] = []
        for account, body in messages:
            data = body.encode() if isinstance(body, str) else body
            items.extend(self._encrypt(account, await self._sessions_for(account), data, content_type))
        return await self._deliver_stream(items)

    async def _deliver_stream(self, items: list[OutboxItem]) -> list[SendReceipt | Failed]:
        pending = {(i.message_id, i.recipient_device): i for i in items}
        outcomes: dict[tuple[bytes, str], SendReceipt | Failed] = {}
        for attempt in range(2 * len(self._transport.endpoints)):
            if not pending:
                break
            token = await self._token()
            target = self._transport.endpoint
            batch = list(pending.values())

            async def requests() -> AsyncIterator[relay_pb2.SendBatch]:
                for start in range(0, len(batch), SEND_BATCH):
                    yield relay_pb2.SendBatch(
                        envelopes=[
                            relay_pb2.SendRequest(
                                recipient_device_id=item.recipient_device,
                                message_id=item.message_id,
                                ciphertext=item.ciphertext,
                            )
                            for item in batch[start : start + SEND_BATCH]
                        ]
                    )

            call = relay_pb2_grpc.RelayStub(self._transport.channel("relay")).SendStream(requests(), metadata=metadata(token))
            try:
                async for batch_result in call:
                    for result in batch_result.results:
                        self._settle_result(result, pending, outcomes)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE and exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise rejected(exc) from exc
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    self._access_token = ""
                else:
                    self._transport.fail_over(target)
                await asyncio.sleep(RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)])
        return [outcomes.get((i.message_id, i.recipient_device)) or Failed(i.message_id, i.recipient_device, "UNAVAILABLE", "not acknowledged") for i in items]

    def _settle_result(
        self,
        result: relay_pb2.SendResult,
        pending: dict[tuple[bytes, str], OutboxItem],
        outcomes: dict[tuple[bytes, str], SendReceipt | Failed],
    ) -> None:
        key = (result.message_id, result.recipient_device_id)
        item = pending.pop(key, None)
        if item is None:
            return
        if result.error_code == 0:
            self._state.remove_outbox(item.message_id, item.recipient_device)
            outcomes[key] = SendReceipt(item.message_id, item.recipient_device, result.sequence, result.duplicate)
        elif result.error_code == grpc.StatusCode.UNAVAILABLE.value[0]:
            pending[key] = item  # retried in the next round
            outcomes[key] = Failed(item.message_id, item.recipient_device, "UNAVAILABLE", result.error_message)
        else:
            # Refused for good: drop it from the outbox, report it.
            self._state.remove_outbox(item.message_id, item.recipient_device)
            outcomes[key] = Failed(item.message_id, item.recipient_device, _code_name(result.error_code), result.error_message)

    # -- receiving -----------------------------------------------------

    async def ack(self, message: Message) -> None:
        """Marks ``message`` processed: it is never shown again, and the server deletes it."""
        self._state.mark_seen(message.message_id)
        await self._acks.put(message.sequence)

    async def _directory_key(self, account: str, device: str) -> bytes | None:
        """The identity key the directory publishes for ``device`` of ``account``."""
        request = auth_pb2.ListDevicesRequest(account=account)
        try:
            reply: auth_pb2.ListDevicesResponse = await self._authed(
                lambda ch, t, md: auth_pb2_grpc.AuthStub(ch).ListDevices(request, timeout=t, metadata=md),
                service="auth",
            )
        except RequestRejected:
            return None
        for entry in reply.devices:
            if entry.device_id == device and not entry.revoked:
                return bytes(entry.identity_key)
        return None

    async def _open(self, envelope: mailbox_pb2.Envelope) -> Message | None:
        """Unseals and decrypts (or recalls) an envelope; None when it must only be acknowledged."""
        mid = envelope.message_id
        if self._state.was_seen(mid):
            return None
        item = self._state.inbox_item(mid)
        if item is None:
            item = await self._decrypt(envelope)
            if item is None:
                return None
        payload = Payload.decode(item.payload)
        return Message(
            message_id=mid,
            sender_account=item.sender_account,
            sender_device=item.sender_device,
            counter=payload.counter,
            sent_at_ms=payload.sent_at_ms,
            content_type=payload.content_type,
            body=payload.body,
            sequence=envelope.sequence,
        )

    async def _decrypt(self, envelope: mailbox_pb2.Envelope) -> InboxItem | None:
        opened = self._book.open(envelope.message_id, envelope.ciphertext)
        if opened is None:
            return None
        if opened.new_session:
            # The sealed sender claim is only a claim until the initiator's
            # identity key matches the one the directory holds for that device.
            try:
                published = await self._directory_key(opened.content.sender_account, opened.content.sender_device)
            except BaseException:
                # Directory unreachable or the reader cancelled: undo the in-memory
                # prekey consumption, or the redelivered copy becomes undecryptable.
                self._book.forget()
                raise
            if published != opened.their_identity_key:
                self._book.reject(opened, "sender identity does not match the directory")
                return None
            item = self._book.commit(opened)
            self._schedule_top_up()
            return item
        return self._book.commit(opened)

    def _schedule_top_up(self) -> None:
        """A new session used one-time prekeys: replenish them in the background when low."""
        if self._top_up is None or self._top_up.done():
            self._top_up = asyncio.create_task(self._top_up_prekeys())

    async def prekeys_left(self) -> tuple[int, int]:
        """(classical, post-quantum) one-time prekeys the directory still holds for this device."""
        reply: keys_pb2.CountPrekeysResponse = await self._authed(
            lambda ch, t, md: keys_pb2_grpc.KeysStub(ch).CountPrekeys(keys_pb2.CountPrekeysRequest(), timeout=t, metadata=md),
            service="keys",
        )
        return reply.one_time_prekeys, reply.pq_one_time_prekeys

    async def _top_up_prekeys(self) -> None:
        try:
            classical, post_quantum = await self.prekeys_left()
            one_time = DEFAULT_ONE_TIME_PREKEYS - classical if classical < PREKEY_LOW_WATER else 0
            pq = DEFAULT_PQ_PREKEYS - post_quantum if post_quantum < PREKEY_LOW_WATER else 0
            if one_time or pq:
                await self.publish_prekeys(one_time=one_time, pq=pq)
        except (RequestRejected, ServiceUnavailable) as exc:
            log.info("prekey top-up postponed: %s", exc)  # the next new session tries again

    async def _ack_frames(self) -> AsyncIterator[mailbox_pb2.SyncRequest]:
        yield mailbox_pb2.SyncRequest()
        while True:
            sequences = [await self._acks.get()]
            while not self._acks.empty() and len(sequences) < MAX_ACKS_PER_FRAME:
                sequences.append(self._acks.get_nowait())
            yield mailbox_pb2.SyncRequest(ack_sequences=sequences)

    async def messages(self) -> AsyncGenerator[Message, None]:
        """Backlog, then live messages, for ever; reconnects and fails over on its own."""
        failures = 0
        while not self._closed:
            target = self._transport.endpoint
            try:
                token = await self._token()
            except ServiceUnavailable:
                # Login or refresh found no endpoint (regions failing over): keep trying.
                await asyncio.sleep(RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)])
                failures += 1
                continue
            call = mailbox_pb2_grpc.MailboxStub(self._transport.channel("mailbox")).Sync(self._ack_frames(), metadata=metadata(token))
            try:
                async for response in call:
                    failures = 0
                    for envelope in response.envelopes:
                        message = await self._open(envelope)
                        if message is None:
                            await self._acks.put(envelope.sequence)
                        else:
                            yield message
                    if response.HasField("backlog_done"):
                        self.backlog_done.set()
                if self._closed:
                    return
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED and self._closed:
                    return
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    self._access_token = ""
                elif exc.code() in RETRYABLE or exc.code() in STREAM_RECONNECT:
                    self._transport.fail_over(target)
                else:
                    raise rejected(exc) from exc
                await asyncio.sleep(RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)])
                failures += 1
            except ServiceUnavailable:
                # A lookup while opening an envelope (the directory) found no endpoint; the
                # envelope is not acked, so it comes back after the reconnect.
                self._transport.fail_over(target)
                await asyncio.sleep(RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)])
                failures += 1
            finally:
                call.cancel()

    async def close(self) -> None:
        self._closed = True
        if self._top_up is not None:
            self._top_up.cancel()
            await asyncio.gather(self._top_up, return_exceptions=True)
        await self._transport.close()
        self._state.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _code_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)

