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

``Client`` is the facade; each path lives in its own private module:
``_sending`` (outbox, group-committed encryption, the coalescing flusher),
``_receiving`` (the Sync loop, batched decryption, acknowledgements),
``_tokens`` (login and authenticated calls), ``_transport`` (endpoints and
failover), ``_sessions`` and ``_state`` (keys, ratchets, SQLite).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from xchat.client import _codec
from xchat.client._attachments import CONTENT_TYPE as ATTACHMENT_TYPE
from xchat.client._attachments import Attachment, Attachments, Progress, pointer
from xchat.client._devices import Devices, LinkedDevice, redeem
from xchat.client._events import EventQueue
from xchat.client._transparency import Transparency
from xchat.client._healing import Healer
from xchat.client import _lifecycle
from xchat.client._history import History, received_entry, sent_entry
from xchat.client import _sentsync
from xchat.client._conversation import Ledger
from xchat.client._conversation_tasks import Conversations
from xchat.client._fanout import Fanout
from xchat.client._group_state import GROUP_TYPES
from xchat.client._groups import Groups
from xchat.client.groups import Group, GroupEvent
from xchat.client._sentsync import SENT_CONTENT_TYPE
from xchat.client._receiving import Receiver
from xchat.client._rotation import PrekeyRotation
from xchat.client._sending import Sender
from xchat.client._signals import Signals
from xchat.client.signals import SignalEvent
from xchat.client._sessions import EncryptRequest, SessionBook
from xchat.client._state import LocalState
from xchat.client._tokens import Tokens
from xchat.client._transport import Endpoint, Transport
from xchat.client.crypto import PublicPrekeys, safety_number
from xchat.client.errors import AttachmentError, NotRegistered, RequestRejected, ServiceUnavailable
from xchat.client.messages import ConversationEvent, ConversationSettings, Failed, Message, SecurityEvent, SendReceipt
from xchat.statements import register_statement
from xchat.v1 import auth_pb2, auth_pb2_grpc, keys_pb2, keys_pb2_grpc, mailbox_pb2, mailbox_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_ONE_TIME_PREKEYS = 50
DEFAULT_PQ_PREKEYS = 20
# Below this many one-time prekeys (of either kind) the SDK publishes more.
PREKEY_LOW_WATER = 10


class Client:
    """One device of one account: open it with ``await Client.open(state_path, endpoints)``.

    Use it as an async context manager (``async with await Client.open(...) as c``)
    or call ``close()``. All end-to-end cryptography happens here; the servers see
    ciphertext only. Calls fail over across the given regions on their own.
    """

    def __init__(self, state: LocalState, transport: Transport, *, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._transport = transport
        self._history = History(state)  # opt-in (keep_history): nothing is kept unless asked
        self._events = EventQueue()
        self._book = SessionBook(state, on_event=self._events.put)
        self._tokens = Tokens(state, self._book, transport)
        self._devices = Devices(state, transport, self._tokens, on_event=self._events.put)
        self._transparency = Transparency(
            state, self._tokens, on_event=self._events.put, own=self._own_account_key
        )
        self._devices.transparency = self._transparency.check
        self._attachments = Attachments(state, transport, self._tokens)
        self._book.account_safety_number = self._account_safety_number
        self._book.device_listed = self._devices.lists
        # Sender certificates and ids bound into PQXDH (issue 9, docs/crypto.md).
        self._book.account_key_of = self._devices.pinned_key
        self._book.list_version_of = self._devices.pinned_version
        self._book.certificate = self._own_certificate
        self._book.me = self._me
        self._fanout = Fanout(self._devices, self._book, self._tokens, me=lambda: (self.account, self.device_id))
        self.backlog_done = asyncio.Event()
        self._top_up: asyncio.Task[None] | None = None
        self._sender = Sender(
            state,
            self._book,
            transport,
            self._tokens,
            sender=lambda: (self.account, self.device_id),
            fetch_sessions=self._fanout.fetch,
            ready_devices=self._fanout.ready,
            device_gone=self._fanout.gone,
            ttl_for=lambda account, content_type: self._conversations.ledger.ttl_for(account, content_type),
        )
        self._healer = Healer(
            self._book, self._tokens, send=self._sender.send_request, directory_key=self._directory_key, on_event=self._events.put
        )
        self._receiver = Receiver(
            state,
            self._book,
            transport,
            self._tokens,
            backlog_done=self.backlog_done,
            directory_key=self._directory_key,
            on_new_session=self._schedule_top_up,
        )
        # Typing and presence (issue 14): sealed, ephemeral, through relay and the open Sync.
        self._signals = Signals(
            state, self._book, self._tokens, me=lambda: (self.account, self.device_id), on_event=self._events.put, clock=clock
        )
        self._receiver.on_ephemeral = self._signals.received
        self._rotation = PrekeyRotation(
            state, self._book, upload=self._upload_prekeys, clock_ms=lambda: int(clock() * 1000)
        )
        # Receipts, disappearing timers, edits and deletes (issue 14): applied inside the receive transaction.
        self._conversations = Conversations(
            Ledger(state, me=lambda: self.account, on_event=self._events.put),
            me=lambda: self.account,
            send_control=self._send_control,
        )
        self._book.on_stored = self._conversations.ledger.stored
        self._book.on_control = self._conversations.ledger.control
        self._book.on_encrypted = self._conversations.ledger.encrypted
        self._groups = Groups(
            state,
            me=lambda: (self.account, self.device_id),
            send_many=self._sender.send_many,
            own_devices=lambda: self._fanout.ready(self.account) != [],
            devices_of=self._fanout.ready,
            reach=self._fanout.fetch,
            ack=self._receiver.ack,
            on_event=self._events.put,
        )

    @classmethod
    async def open(
        cls,
        state_path: Path | str,
        endpoints: Sequence[Endpoint],
        *,
        root_certificates: bytes | None = None,
        call_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        state_key: bytes | None = None,
    ) -> Client:
        """Opens (or creates) the local state; ``endpoints`` are tried in order (home region first).

        Each endpoint is one address serving all four services, or a mapping
        ``{"auth": ..., "keys": ..., "relay": ..., "mailbox": ...}`` for one region.
        ``clock`` (seconds, like ``time.time``) dates the signed prekeys: a
        registered client whose keys are older than the rotation age starts
        replacing them in the background here (``rotate_prekeys``).

        ``state_key`` (32 random bytes the app keeps outside the state file, e.g.
        in the platform key store) encrypts every secret the state file holds:
        identity seed, prekeys, sessions, message plaintexts, tokens. A plain
        file opened with a key is encrypted in place. Without a key secrets are
        stored in clear (protect the file by other means). A missing or wrong
        key for an encrypted file raises ``StateKeyError`` and changes nothing.
        """
        state = LocalState(state_path, state_key=state_key)
        transport = Transport(endpoints, root_certificates=root_certificates, call_timeout=call_timeout)
        client = cls(state, transport, clock=clock)
        client._rotation.check()
        return client

    @classmethod
    async def open_linked(
        cls,
        code: str,
        state_path: Path | str,
        endpoints: Sequence[Endpoint],
        *,
        root_certificates: bytes | None = None,
        call_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        state_key: bytes | None = None,
    ) -> Client:
        """A new device of an existing account, from the code ``link_device()`` gave on one of its devices.

        ``state_path`` must be a new state file (``state_key`` as for ``open``).
        The code is usable once, for 120 s; ``LinkFailed`` if it is unknown,
        expired, used or altered. The device receives the account identity
        and profile key, then publishes its own prekeys: it is reachable once
        this returns.
        """
        state = LocalState(state_path, state_key=state_key)
        transport = Transport(endpoints, root_certificates=root_certificates, call_timeout=call_timeout)
        try:
            await redeem(state, transport, code)
        except BaseException:
            state.close()
            await transport.close()
            raise
        client = cls(state, transport, clock=clock)
        # Our own signed list, pinned: the version our sender certificate carries.
        await client._devices.own(client.account)
        await client.publish_prekeys(one_time=DEFAULT_ONE_TIME_PREKEYS, rotate_signed=True)
        await client.register_delivery_key()
        return client

    # -- identity ------------------------------------------------------

    @property
    def account(self) -> str:
        """This device's account name (``NotRegistered`` before ``register``)."""
        value = self._state.get_meta("account")
        if value is None:
            raise NotRegistered("this client has no account yet: call register()")
        return value.decode()

    @property
    def device_id(self) -> str:
        """This device's id, given by the server at registration (``NotRegistered`` before)."""
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
        """Envelopes dropped because they could never be read (each also an ``Undecryptable`` event)."""
        return self._book.undecryptable

    async def register(self, account: str, *, one_time_prekeys: int = DEFAULT_ONE_TIME_PREKEYS) -> str:
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
        await self.publish_prekeys(one_time=one_time_prekeys, rotate_signed=True)
        await self.register_delivery_key()
        return reply.device_id

    # -- unidentified delivery (``_delivery``) -----------------------------

    async def register_delivery_key(self) -> None:
        """Registers this device's delivery verifier with auth (register() does it), so that
        contacts we write to may send to us without naming themselves to the servers."""
        verifier = self._book.delivery.verifier()
        request = auth_pb2.SetDeliveryVerifierRequest(
            verifier=verifier, sealed_from_anyone=self._book.delivery.from_anyone()
        )
        await self._tokens.authed(
            lambda ch, t, md: auth_pb2_grpc.AuthStub(ch).SetDeliveryVerifier(request, timeout=t, metadata=md),
            service="auth",
        )
        self._book.delivery.mark_registered(verifier)

    async def accept_sealed_from_anyone(self, accept: bool = True) -> None:
        """Lets anyone, even a stranger who has no delivery key for this device, send to it sealed
        (Signal's unrestricted unidentified access; off by default), so that their first message
        names no sender to the servers. The price: a stranger's messages reach this device with
        no account the servers could hold to account; relay limits them per sender address and
        per recipient (``XCHAT_STRANGER_RATE``), apart from what contacts may send. Kept in the
        local state and registered with auth at once (needs a registered device)."""
        self._book.delivery.set_from_anyone(accept)
        await self.register_delivery_key()

    async def rotate_profile_key(self) -> None:
        """A new profile key (e.g. after blocking a contact): every delivery key derived from the
        old one is refused within the servers' 2 s device cache; contacts we write to again learn
        the new one, the others fall back to sending authenticated."""
        self._book.delivery.rotate()
        await self.register_delivery_key()

    async def publish_prekeys(
        self, *, one_time: int = DEFAULT_ONE_TIME_PREKEYS, pq: int = DEFAULT_PQ_PREKEYS, rotate_signed: bool = False
    ) -> None:
        """Generates and uploads one-time prekeys (and a new signed prekey when ``rotate_signed``)."""
        now_ms = self._rotation.now_ms()
        await self._upload_prekeys(
            self._book.new_prekeys(one_time=one_time, pq=pq, rotate_signed=rotate_signed, now_ms=now_ms)
        )
        if rotate_signed:
            self._rotation.published(now_ms)

    async def rotate_prekeys(self) -> None:
        """Replaces the signed prekey and the PQ last-resort prekey now (done on its own every
        ``PREKEY_ROTATION_AGE_MS``); the replaced ones still open first messages for a grace period."""
        await self._rotation.rotate()

    async def _upload_prekeys(self, public: PublicPrekeys) -> None:
        request = _codec.upload_request(public)
        await self._tokens.authed(
            lambda ch, t, md: keys_pb2_grpc.KeysStub(ch).UploadPrekeys(request, timeout=t, metadata=md), service="keys"
        )

    def safety_number(self, peer_account: str) -> str:
        """Digits to compare out of band with ``peer_account``: over both account identity keys,
        so one number covers every device of both accounts."""
        return self._book.safety_number(our_account=self.account, peer_account=peer_account)

    def _account_safety_number(self, our_account: str, peer_account: str) -> str | None:
        ours, theirs = self._devices.account_key, self._devices.pinned_key(peer_account)
        if ours is None or theirs is None:
            return None  # an account without an account key: per device (first device with a session)
        return safety_number(ours.public, our_account, theirs, peer_account)

    # -- linked devices (``_devices``) ---------------------------------------

    async def link_device(self) -> str:
        """Admits a new device to this account and returns the code to give it (``Client.open_linked``).

        The code (show it as a QR code) works once, within 120 s. The new device
        is in the signed device list from now on: ``revoke_device`` it if the
        code is never used.
        """
        code, _device = await self._devices.link(self.account, self._book.delivery.profile_key())
        return code

    async def devices(self) -> list[LinkedDevice]:
        """This account's devices as its signed device list names them (verified with the account key)."""
        return await self._devices.devices(self.account, self.device_id)

    async def revoke_device(self, device_id: str) -> None:
        """Removes ``device_id`` from this account: a new signed list without it, then auth revokes it."""
        await self._devices.revoke(self.account, device_id)

    async def delete_account(self) -> int:
        """Deletes this account for good (docs/adr/0017); returns until when its name is held.

        Signed by the account key (a stolen token cannot do it): every device is
        revoked, the signed device list removed, the devices' prekeys and mailboxes
        purged, and the name cannot be registered again for 30 days. Contacts then get
        ``RequestRejected`` (NOT_FOUND) when they send. This device's state file is
        left as it is: delete it (or ``export_history`` first). Takes ~3 s.
        """
        return await _lifecycle.delete(self.account, self._devices, self._tokens, self._transport)

    async def monitor_account(self) -> None:
        """Checks this account in the key transparency log (docs/adr/0014): our account key, and
        only device lists it signed. Otherwise a ``KeyTransparencyAlarm`` event and
        ``KeyTransparencyError`` (a key or device this account did not add, a forked or rolled-back
        log). Every fetch of our own devices checks the same; call this periodically as well."""
        await self._transparency.monitor()

    def _own_account_key(self) -> tuple[str | None, bytes | None]:
        raw = self._state.get_meta("account")
        key = self._devices.account_key
        return (raw.decode() if raw is not None else None), (key.public if key is not None else None)

    def verify(self, peer_account: str, safety_number: str) -> None:
        """Records that the user compared ``safety_number`` with ``peer_account`` out of band.

        Raises ``SafetyNumberMismatch`` if the digits differ (spaces ignored). From
        then on a changed identity key of that account blocks sending to it
        (``IdentityNotApproved``) until ``approve_identity``.
        """
        self._book.verify(our_account=self.account, peer_account=peer_account, number=safety_number)

    def approve_identity(self, peer_account: str) -> None:
        """Accepts ``peer_account``'s changed identity key: sending resumes, unverified (``verify`` again)."""
        self._book.approve_identity(peer_account)

    # -- sending (``_sending``) ------------------------------------------

    async def send(self, account: str, body: bytes | str, *, content_type: str = "text/plain") -> list[SendReceipt]:
        """Encrypts ``body`` for each device of ``account`` and stores it durably; one receipt per device.

        A copy goes to this account's other devices too (sent-message sync: they see it
        with ``Message.sent_to``); its failure never fails this call.

        Concurrent calls coalesce into shared rounds; each returns once its own
        envelopes are acknowledged. Whatever an earlier call left queued goes first.
        """
        self._rotation.check()
        if content_type == SENT_CONTENT_TYPE:
            raise ValueError(f"content type {SENT_CONTENT_TYPE!r} is the SDK's own (sent-message sync)")
        if content_type in GROUP_TYPES:
            raise ValueError(f"content type {content_type!r} is the SDK's own (groups: use send_group)")
        data = _bytes(body)
        own = self.account
        # A disappearing conversation's envelopes (and their copies to our devices) expire with its timer.
        ttl = self._conversations.ledger.ttl_for(account, content_type)
        self._conversations.start()
        if account == own or self._fanout.ready(own) == []:
            receipts = await self._sender.send(account, data, content_type, ttl_s=ttl)
        else:
            # Sent-message sync: a copy to our other devices, encrypted in the same group commit.
            sent, synced = await asyncio.gather(
                self._sender.send(account, data, content_type, ttl_s=ttl),
                self._sender.send(own, _sentsync.wrap(account, content_type, data), SENT_CONTENT_TYPE, ttl_s=ttl),
                return_exceptions=True,
            )
            if isinstance(synced, BaseException):
                log.info("sent-message sync to our other devices failed (the message itself is unaffected): %s", synced)
            if isinstance(sent, BaseException):
                raise sent
            receipts = sent
        if receipts:
            self._history.add(sent_entry(receipts[0].message_id, (own, self.device_id), account, content_type, data, ttl_s=ttl))
        return receipts  # its ledger row was written with its encryption (``_conversation``)

    async def flush_outbox(self) -> list[SendReceipt | Failed]:
        """Resends what a previous run encrypted but did not get acknowledged (same bytes, same ids)."""
        return await self._sender.flush()

    async def send_many(
        self, messages: Iterable[tuple[str, bytes | str]], *, content_type: str = "text/plain"
    ) -> list[SendReceipt | Failed]:
        """Encrypts all (in order, one transaction), then sends them pipelined over SendStream.

        Our other devices get a copy of each (sent-message sync, as for ``send``); only
        the outcomes of the messages themselves are returned.
        """
        self._rotation.check()
        if content_type == SENT_CONTENT_TYPE:
            raise ValueError(f"content type {SENT_CONTENT_TYPE!r} is the SDK's own (sent-message sync)")
        batch = [(account, _bytes(body)) for account, body in messages]
        own = self.account
        copies = [(own, _sentsync.wrap(account, content_type, body)) for account, body in batch if account != own]
        if not copies or self._fanout.ready(own) == []:
            return await self._sender.send_many(batch, content_type)
        sent, synced = await asyncio.gather(
            self._sender.send_many(batch, content_type),
            self._sender.send_many(copies, SENT_CONTENT_TYPE),
            return_exceptions=True,
        )
        if isinstance(synced, BaseException):
            log.info("sent-message sync to our other devices failed (the messages themselves are unaffected): %s", synced)
        if isinstance(sent, BaseException):
            raise sent
        return sent

    # -- groups (``_groups``, docs/adr/0015) -----------------------------------

    async def create_group(self, name: str, members: Iterable[str]) -> str:
        """A new group of this account and ``members`` (account names); returns its id.

        Its state (name, members, version) goes end-to-end encrypted to every device of
        every member, which sees it as a ``GroupChanged`` event; the servers never learn it.
        Any member may change the group; a removed member's changes are refused.
        """
        return await self._groups.create(name, list(members))

    async def add_members(self, group_id: str, members: Iterable[str]) -> Group:
        """Adds accounts to the group: they read what is sent from now on, nothing earlier."""
        return await self._groups.change(group_id, add=list(members))

    async def remove_members(self, group_id: str, members: Iterable[str]) -> Group:
        """Removes accounts from the group; every remaining member's device starts a new sender
        key at its next group message, so the removed ones read nothing sent after."""
        return await self._groups.change(group_id, remove=list(members))

    async def leave_group(self, group_id: str) -> None:
        """Takes this account out of the group (all its devices): the others rotate their keys."""
        await self._groups.change(group_id, remove=[self.account])

    async def rename_group(self, group_id: str, name: str) -> Group:
        """Renames the group (at most 128 characters) on every member device."""
        return await self._groups.change(group_id, name=name)

    def group(self, group_id: str) -> Group | None:
        """The group as this device knows it (None: unknown here)."""
        return self._groups.group(group_id)

    async def send_group(
        self, group_id: str, body: bytes | str, *, content_type: str = "text/plain"
    ) -> list[SendReceipt | Failed]:
        """Encrypts ``body`` once under this device's sender key for the group and sends the same
        ciphertext to every device of every member (our other devices too); one outcome per device.

        Members read it from ``messages()`` with ``Message.group_id`` set. ``GroupError`` when
        this account is not (or no longer) in the group.
        """
        self._rotation.check()
        return await self._groups.send(group_id, _bytes(body), content_type)

    # -- attachments (``_attachments``, docs/attachments.md) ----------------

    async def send_attachment(
        self,
        account: str,
        source: str | Path | BinaryIO,
        *,
        content_type: str = "application/octet-stream",
        name: str | None = None,
        progress: Progress | None = None,
    ) -> list[SendReceipt]:
        """Encrypts a file (a path, or a seekable binary file) under a fresh key, uploads it, then sends
        ``account`` a message carrying its id, key, size and SHA-256; one receipt per device, as ``send``.

        Up to the server's limit (128 MiB by default); memory stays bounded whatever the size.
        Outages are resumed from the last stored chunk in any region; if this still fails
        (``ServiceUnavailable`` after two minutes, or the client closed), calling it again with
        the same unchanged path resumes the upload. ``progress(done, total)``: bytes stored so far.
        Refusals are ``RequestRejected`` (INVALID_ARGUMENT over the size limit,
        RESOURCE_EXHAUSTED over the account's quota). The recipient reads it with
        ``attachment(message)`` and ``download_attachment``.
        """
        attachment, pending = await self._attachments.upload(source, content_type=content_type, name=name, progress=progress)
        receipts = await self.send(account, attachment.body(), content_type=ATTACHMENT_TYPE)
        self._attachments.forget_pending(pending)
        return receipts

    def attachment(self, message: Message) -> Attachment | None:
        """The attachment ``message`` references, or None for any other message."""
        return pointer(message)

    async def download_attachment(
        self, message: Message | Attachment, dest: str | Path, *, progress: Progress | None = None
    ) -> Path:
        """Downloads, decrypts and verifies an attachment into ``dest``; returns ``dest``.

        Each 64 KiB chunk is authenticated as it arrives and the file's size and SHA-256 are
        checked at the end: ``AttachmentError`` (``problem`` tampered, truncated, size, digest)
        and nothing at ``dest`` if any check fails. Until it returns the bytes live in
        ``dest`` + ``.xchat-part``; an interrupted download (outage, client closed) resumes
        from there when called again. ``progress(done, total)``: ciphertext bytes received.
        """
        attachment = message if isinstance(message, Attachment) else pointer(message)
        if attachment is None:
            raise AttachmentError("not_attachment", f"message of type {message.content_type!r} carries no attachment")
        return await self._attachments.download(attachment, Path(dest), progress)

    # -- conversations: receipts, disappearing messages, edits (``_conversation``) --

    def conversation_settings(self, account: str) -> ConversationSettings:
        """The disappearing timer and the read-receipt choice of the conversation with ``account``."""
        return self._conversations.settings(account)

    async def set_disappearing(self, account: str, seconds: int) -> None:
        """Sets the conversation's disappearing timer (0: off; at most four weeks) for every device of
        both accounts; the latest setting wins everywhere (``DisappearingTimerChanged`` on the others).

        Each message sent or received from then on is deleted by every device ``seconds`` after it
        sent or received it (``MessageExpired``), and the server's copy expires no later.
        """
        await self._conversations.set_timer(account, seconds)

    def set_read_receipts(self, account: str, enabled: bool) -> None:
        """Read receipts on or off for the conversation with ``account`` (on by default; this
        device only): off, ``mark_read`` sends none and the other side's are not reported."""
        self._conversations.set_read_receipts(account, enabled)

    async def mark_read(self, *messages: Message) -> None:
        """Tells the senders that their user read ``messages``: one end-to-end encrypted read receipt
        per sender account for all of them (``MessagesRead`` on their devices). Delivered receipts
        (``MessagesDelivered``) go on their own once a message is durably received."""
        await self._conversations.mark_read(messages)

    async def edit(self, message_id: bytes, body: bytes | str) -> None:
        """Replaces the body of a message this device sent (``SendReceipt.message_id``), within 24 h:
        every device of both accounts gets ``MessageEdited``. ``EditRefused`` otherwise."""
        await self._conversations.edit(message_id, _bytes(body))

    async def delete_for_everyone(self, message_id: bytes) -> None:
        """Deletes a message this device sent, within 24 h, on every device of both accounts
        (``MessageDeleted``; one not yet shown never reaches ``messages()``). ``EditRefused`` otherwise."""
        await self._conversations.delete_for_everyone(message_id)

    async def _send_control(self, account: str, content_type: str, body: bytes) -> None:
        """A conversation control to every listed device of ``account`` (ours: the other ones)."""
        devices = self._fanout.ready(account)
        if devices is None:
            devices = await self._fanout.fetch(account)
        if not devices:
            return
        outcomes = await self._sender.send_request(EncryptRequest(account, tuple(devices), body, content_type, control=True))
        for outcome in outcomes:
            if isinstance(outcome, Failed) and outcome.code == "UNAVAILABLE":
                raise ServiceUnavailable(f"not acknowledged, kept in the outbox: {outcome.message}")

    # -- receiving (``_receiving``) ----------------------------------------

    async def messages(self) -> AsyncGenerator[Message, None]:
        """Backlog, then live messages, for ever; reconnects and fails over on its own.

        What another device of our account sent comes here too, with ``sent_to`` set
        (sent-message sync): show it as sent by us.
        """
        self._conversations.start()
        inner = self._receiver.messages()
        try:
            async for message in inner:
                if message.content_type in GROUP_TYPES:
                    # Group control messages are applied here; group messages come out decrypted.
                    for shown in await self._groups.receive(message):
                        yield shown
                    continue
                shown = _sentsync.unwrap(message, self.account)
                if self._conversations.ledger.gone(shown.message_id):
                    await self._receiver.ack(shown)  # deleted for everyone, or disappeared, meanwhile
                    continue
                expires = self._conversations.ledger.expires_at(shown.message_id)
                yield shown if expires is None else replace(shown, expires_at_ms=expires)
        finally:
            await inner.aclose()

    def events(self) -> AsyncGenerator[SecurityEvent | GroupEvent | ConversationEvent | SignalEvent, None]:
        """Security events the receive path raised (``SenderMismatch``, ``IdentityChanged``,
        ``Undecryptable``), oldest first, for ever.

        Read it beside ``messages()`` (e.g. in its own task) and show them: each
        is something refused that the app never sees as a message. Several
        readers share one queue (each event goes to one of them).
        """
        return self._events.stream()

    # -- typing, presence and push (``_signals``, docs/push.md) ---------------

    async def set_typing(self, account: str, on: bool) -> None:
        """Tells ``account``'s devices (those we hold a session with) that we started or stopped typing.

        Ephemeral: sealed end to end, never stored; a device without an open
        Sync (``messages()`` running) never sees it. They get a ``Typing`` event
        from ``events()``. Repeating the same state within 3 s sends nothing;
        beyond relay's rate it is ``RequestRejected`` (RESOURCE_EXHAUSTED).
        """
        await self._signals.typing(account, on)

    async def announce_online(self, account: str) -> None:
        """Tells ``account``'s devices we are online (an ``Online`` event there); at most once per 10 s."""
        await self._signals.online(account)

    def set_typing_indicators(self, enabled: bool) -> None:
        """Opt in or out (kept on this device): when off, typing and presence are neither sent nor shown."""
        self._signals.set_enabled(enabled)

    async def register_push(self, token: bytes | str) -> None:
        """Registers this device's push token (b"" removes it): while no Sync of this device is open in
        any region, a stored envelope makes the servers call the push gateway with this token and
        nothing else (at most once per coalescing window; docs/push.md)."""
        raw = token.encode() if isinstance(token, str) else bytes(token)
        request = mailbox_pb2.RegisterPushRequest(token=raw)
        await self._tokens.authed(
            lambda ch, t, md: mailbox_pb2_grpc.MailboxStub(ch).RegisterPush(request, timeout=t, metadata=md),
            service="mailbox",
        )

    async def ack(self, message: Message) -> None:
        """Marks ``message`` processed: it is never shown again, and the server deletes it."""
        await self._receiver.ack(message)
        self._groups.acked(message)
        self._history.add(received_entry(message))

    # -- history (``_history``) ----------------------------------------------

    def keep_history(self, enabled: bool = True) -> None:
        """Keep (or stop keeping, and delete) a local history on this device: from now on, each
        one-to-one message it sends and each message the app ``ack``s, sealed in the state file.
        Messages of a disappearing conversation are never kept. Off by default."""
        self._history.keep(enabled)

    async def export_history(
        self, path: str | Path, *, passphrase: str | None = None, key: bytes | None = None
    ) -> int:
        """Writes the kept history to ``path``, encrypted (AES-256-GCM under scrypt(``passphrase``) or
        a 32-byte ``key``); returns how many messages it holds. Read it with ``read_history_export``.
        The key derivation and the write run in a thread: receiving goes on meanwhile."""
        return await self._history.export(Path(path), passphrase=passphrase, key=key)

    def _me(self) -> tuple[str, str] | None:
        """(account, device id) once registered: bound into the PQXDH AD of new sessions."""
        account, device = self._state.get_meta("account"), self._state.get_meta("device_id")
        return (account.decode(), device.decode()) if account is not None and device is not None else None

    def _own_certificate(self) -> bytes:
        """This device's sender certificate for the sealed layer (b"" before it can have one)."""
        me = self._me()
        if me is None:
            return b""
        return self._devices.certificate(me[0], me[1], self._book.identity.public, int(time.time() * 1000))

    async def _directory_key(self, account: str, device: str) -> bytes | None:
        """The identity key ``account``'s signed device list gives ``device`` (None: not listed or untrusted)."""
        try:
            return await self._devices.listed_key(account, device)
        except RequestRejected:
            return None

    # -- prekeys -----------------------------------------------------------

    def _schedule_top_up(self) -> None:
        """A new session used one-time prekeys: replenish them in the background when low."""
        if self._top_up is None or self._top_up.done():
            self._top_up = asyncio.create_task(self._top_up_prekeys())

    async def prekeys_left(self) -> tuple[int, int]:
        """(classical, post-quantum) one-time prekeys the directory still holds for this device."""
        reply: keys_pb2.CountPrekeysResponse = await self._tokens.authed(
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

    # -- lifetime ------------------------------------------------------------

    async def close(self) -> None:
        """Stops sending (unsent envelopes stay in the outbox) and receiving; acks are confirmed first, bounded."""
        await self._healer.close()
        await self._conversations.close()
        await self._sender.close()
        await self._fanout.close()
        await self._rotation.close()
        await self._receiver.close(confirm_within=self._transport.call_timeout)
        if self._top_up is not None:
            self._top_up.cancel()
            await asyncio.gather(self._top_up, return_exceptions=True)
        await self._transport.close()
        self._state.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body
