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

``Client`` is the facade: it makes and wires the parts, and each public method
hands over to the part that owns it. Sending, receiving, identity, prekeys and
lifetime are here; the methods of the other features are in one class each,
which ``Client`` inherits: ``_client_account`` (delivery keys, trust, linked
devices, history), ``_client_conversations`` (receipts, disappearing messages,
edits, typing, presence, push), ``_client_groups``, ``_client_attachments``.
Each path lives in its own private module:
``_registration`` (account, device id, registration, what vouches for us),
``_prekeys`` (publishing and topping up; ``_rotation`` replaces signed ones),
``_messaging`` (sent-message sync, history, what the app is shown),
``_sending`` (outbox, group-committed encryption, the coalescing flusher),
``_receiving`` (the Sync loop, batched decryption, acknowledgements),
``_devices`` and ``_transparency`` (linked devices, key transparency; ``_gossip`` and
``_auditors`` its gossip between devices and its auditor statements),
``_groups``, ``_attachments``, ``_conversation_tasks``, ``_signals``, ``_history``,
``_tokens`` (login and authenticated calls), ``_transport`` (endpoints and
failover), ``_sessions``, ``_opening`` and ``_state`` (keys, ratchets, SQLite).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from pathlib import Path

from xchat.client._attachments import Attachments
from xchat.client._auditors import DEFAULT_AUDITOR_MAX_LAG_S, RequiredAuditors
from xchat.client._client_account import AccountMethods
from xchat.client._client_attachments import AttachmentMethods
from xchat.client._client_conversations import ConversationMethods
from xchat.client._client_groups import GroupMethods
from xchat.client._conversation import Ledger
from xchat.client._conversation_tasks import Conversations
from xchat.client._devices import Devices, redeem
from xchat.client._events import EventQueue
from xchat.client._fanout import Fanout
from xchat.client._gossip import Gossip
from xchat.client._group_conversation import GroupConversations
from xchat.client._groups import Groups
from xchat.client._healing import Healer
from xchat.client._history import History
from xchat.client._messaging import Messaging, as_bytes
from xchat.client._prekeys import DEFAULT_ONE_TIME_PREKEYS, DEFAULT_PQ_PREKEYS, Prekeys
from xchat.client._receiving import Receiver
from xchat.client._reordering import DEFAULT_REORDER_WINDOW_S, Reorder
from xchat.client._registration import Registration
from xchat.client._sending import Sender
from xchat.client._sessions import SessionBook
from xchat.client._signals import Signals
from xchat.client._state import LocalState
from xchat.client._tokens import Tokens
from xchat.client._transparency import Transparency
from xchat.client._transport import Endpoint, Transport
from xchat.client.groups import GroupEvent
from xchat.client.messages import ConversationEvent, Failed, Message, SecurityEvent, SendReceipt
from xchat.client.signals import SignalEvent


# The facade's methods for each feature beyond sending and receiving live beside it,
# one class per feature (``_client_*``); its parts are made and wired in ``__init__``.
class Client(AccountMethods, ConversationMethods, GroupMethods, AttachmentMethods):
    """One device of one account: open it with ``await Client.open(state_path, endpoints)``.

    Use it as an async context manager (``async with await Client.open(...) as c``)
    or call ``close()``. All end-to-end cryptography happens here; the servers see
    ciphertext only. Calls fail over across the given regions on their own.
    """

    def __init__(
        self, state: LocalState, transport: Transport, *, clock: Callable[[], float] = time.time,
        auditors: RequiredAuditors | None = None, reorder_window_s: float = DEFAULT_REORDER_WINDOW_S,
    ) -> None:
        self._state = state
        self._transport = transport
        self._history = History(state)  # opt-in (keep_history): nothing is kept unless asked
        self._events = EventQueue()
        self._book = SessionBook(state, on_event=self._events.put)
        self._tokens = Tokens(state, self._book, transport)
        self._devices = Devices(state, transport, self._tokens, on_event=self._events.put)
        self._prekeys = Prekeys(state, self._book, self._tokens, clock_ms=lambda: int(clock() * 1000))
        self._rotation = self._prekeys.rotation
        self._registration = Registration(
            state, self._book, transport, self._tokens, devices=self._devices, prekeys=self._prekeys
        )
        me = self._registration.sender  # (account, device id); NotRegistered before register()
        self._own_certificate = self._registration.own_certificate
        self._directory_key = self._registration.directory_key
        self._transparency = Transparency(
            state, self._tokens, on_event=self._events.put, own=self._registration.own_account_key, auditors=auditors
        )
        self._devices.transparency = self._transparency.check
        # Epoch roots gossiped inside every payload, checked on every one received (docs/key-transparency.md).
        self._gossip = Gossip(
            self._transparency, self._tokens, on_event=self._events.put,
            own_account=lambda: self._registration.own_account_key()[0],
        )
        self._book.extensions = self._gossip.outgoing
        self._book.on_gossip = self._gossip.received
        self._attachments = Attachments(state, transport, self._tokens)
        self._book.account_safety_number = self._registration.account_safety_number
        self._book.device_listed = self._devices.lists
        # Sender certificates and ids bound into PQXDH (issue 9, docs/crypto.md).
        self._book.account_key_of = self._devices.pinned_key
        self._book.list_version_of = self._devices.pinned_version
        self._book.certificate = self._own_certificate
        self._book.me = self._registration.me
        self._fanout = Fanout(self._devices, self._book, self._tokens, me=me)
        self.backlog_done = asyncio.Event()
        self._sender = Sender(
            state,
            self._book,
            transport,
            self._tokens,
            sender=me,
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
            on_new_session=self._prekeys.schedule_top_up,
            reorder=Reorder(window_s=reorder_window_s, on_gap=self._events.put),
        )
        # Opened messages report their missing predecessors within the window (``_reordering``).
        self._book.reorder_window_ms = int(reorder_window_s * 1000)
        # Typing and presence (issue 14): sealed, ephemeral, through relay and the open Sync.
        self._signals = Signals(state, self._book, self._tokens, me=me, on_event=self._events.put, clock=clock)
        self._receiver.on_ephemeral = self._signals.received
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
            me=me,
            send_many=self._sender.send_many,
            own_devices=lambda: self._fanout.ready(self.account) != [],
            devices_of=self._fanout.ready,
            reach=self._fanout.fetch,
            ack=self._receiver.ack,
            on_event=self._events.put,
        )
        # Receipts and disappearing timers in groups (``_group_conversation``): hooks into both.
        GroupConversations(state, self._conversations.ledger, self._groups, me=lambda: self.account)
        self._messaging = Messaging(
            sender=self._sender,
            receiver=self._receiver,
            fanout=self._fanout,
            conversations=self._conversations,
            groups=self._groups,
            history=self._history,
            me=me,
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
        auditor_keys: Sequence[bytes] = (),
        auditor_max_lag_s: float = DEFAULT_AUDITOR_MAX_LAG_S,
        reorder_window_s: float = DEFAULT_REORDER_WINDOW_S,
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

        ``auditor_keys`` (32-byte Ed25519 public keys of the deployment's key
        transparency auditors, given to the app out of band): every epoch head
        of the directory must then be covered by one of their statements
        (``xchat audit --publish``); a head newer than the latest audit is
        accepted while that audit is at most ``auditor_max_lag_s`` old by this
        device's clock. Otherwise lookups fail with ``KeyTransparencyError``
        ("unaudited", "audit_signature", "audit_mismatch"; docs/key-transparency.md).

        ``reorder_window_s``: order per sender device is kept end to end (ADR 0018): a
        message whose earlier messages have not arrived waits for them at most this
        long (then it is handed over, with an ``OrderGap`` event); 0 hands messages over
        as they arrive.
        """
        auditors = RequiredAuditors(auditor_keys, max_lag_s=auditor_max_lag_s, clock=clock)
        state = LocalState(state_path, state_key=state_key)
        transport = Transport(endpoints, root_certificates=root_certificates, call_timeout=call_timeout)
        client = cls(state, transport, clock=clock, auditors=auditors, reorder_window_s=reorder_window_s)
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
        auditor_keys: Sequence[bytes] = (),
        auditor_max_lag_s: float = DEFAULT_AUDITOR_MAX_LAG_S,
        reorder_window_s: float = DEFAULT_REORDER_WINDOW_S,
    ) -> Client:
        """A new device of an existing account, from the code ``link_device()`` gave on one of its devices.

        ``state_path`` must be a new state file (``state_key``, ``auditor_keys`` as for ``open``).
        The code is usable once, for 120 s; ``LinkFailed`` if it is unknown,
        expired, used or altered. The device receives the account identity
        and profile key, then publishes its own prekeys: it is reachable once
        this returns.
        """
        auditors = RequiredAuditors(auditor_keys, max_lag_s=auditor_max_lag_s, clock=clock)
        state = LocalState(state_path, state_key=state_key)
        transport = Transport(endpoints, root_certificates=root_certificates, call_timeout=call_timeout)
        try:
            await redeem(state, transport, code)
        except BaseException:
            state.close()
            await transport.close()
            raise
        client = cls(state, transport, clock=clock, auditors=auditors, reorder_window_s=reorder_window_s)
        # Our own signed list, pinned: the version our sender certificate carries.
        await client._devices.own(client.account)
        await client.publish_prekeys(one_time=DEFAULT_ONE_TIME_PREKEYS, rotate_signed=True)
        await client.register_delivery_key()
        return client

    # -- identity (``_registration``) ------------------------------------

    @property
    def account(self) -> str:
        """This device's account name (``NotRegistered`` before ``register``)."""
        return self._registration.account

    @property
    def device_id(self) -> str:
        """This device's id, given by the server at registration (``NotRegistered`` before)."""
        return self._registration.device_id

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
        return await self._registration.register(account, one_time_prekeys=one_time_prekeys)

    # -- prekeys (``_prekeys``, ``_rotation``) --------------------------------

    async def publish_prekeys(
        self, *, one_time: int = DEFAULT_ONE_TIME_PREKEYS, pq: int = DEFAULT_PQ_PREKEYS, rotate_signed: bool = False
    ) -> None:
        """Generates and uploads one-time prekeys (and a new signed prekey when ``rotate_signed``)."""
        await self._prekeys.publish(one_time=one_time, pq=pq, rotate_signed=rotate_signed)

    async def rotate_prekeys(self) -> None:
        """Replaces the signed prekey and the PQ last-resort prekey now (done on its own every
        ``PREKEY_ROTATION_AGE_MS``); the replaced ones still open first messages for a grace period."""
        await self._rotation.rotate()

    async def prekeys_left(self) -> tuple[int, int]:
        """(classical, post-quantum) one-time prekeys the directory still holds for this device."""
        return await self._prekeys.left()

    # -- sending (``_messaging``, ``_sending``) ----------------------------------

    async def send(self, account: str, body: bytes | str, *, content_type: str = "text/plain") -> list[SendReceipt]:
        """Encrypts ``body`` for each device of ``account`` and stores it durably; one receipt per device.

        A copy goes to this account's other devices too (sent-message sync: they see it
        with ``Message.sent_to``); its failure never fails this call.

        Concurrent calls coalesce into shared rounds; each returns once its own
        envelopes are acknowledged. Whatever an earlier call left queued goes first.
        """
        self._rotation.check()
        return await self._messaging.send(account, as_bytes(body), content_type)

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
        return await self._messaging.send_many(messages, content_type)

    # -- receiving (``_messaging``, ``_receiving``) --------------------------------

    async def messages(self) -> AsyncGenerator[Message, None]:
        """Backlog, then live messages, for ever; reconnects and fails over on its own.

        What another device of our account sent comes here too, with ``sent_to`` set
        (sent-message sync): show it as sent by us.
        """
        self._conversations.start()
        inner = self._receiver.messages()
        try:
            async for message in inner:
                for shown in await self._messaging.shown(message):
                    yield shown
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

    async def ack(self, message: Message) -> None:
        """Marks ``message`` processed: it is never shown again, and the server deletes it."""
        await self._messaging.ack(message)

    # -- lifetime ------------------------------------------------------------

    async def close(self) -> None:
        """Stops sending (unsent envelopes stay in the outbox) and receiving; acks are confirmed first, bounded."""
        await self._healer.close()
        await self._gossip.close()
        await self._conversations.close()
        await self._sender.close()
        await self._fanout.close()
        await self._rotation.close()
        await self._receiver.close(confirm_within=self._transport.call_timeout)
        await self._prekeys.close()
        await self._transport.close()
        self._state.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
