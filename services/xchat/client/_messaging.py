"""One-to-one messages as the app sends and sees them, over ``_sending`` and ``_receiving``.

``Messaging`` is what ``Client.send``, ``send_many``, ``messages`` and
``ack`` do beyond encrypting and decrypting:

- **sent-message sync** (``_sentsync``): each message also goes, wrapped, to our
  own other devices, in the same group commit; that copy failing never fails
  the send. A copy received is shown as the original with ``sent_to`` set;
- **history** (``_history``): what is sent, and what the app acknowledges, is
  kept when the app asked for it;
- **conversations** (``_conversation``): a disappearing conversation's
  envelopes carry its TTL; a message deleted for everyone, or expired, before
  the app saw it is acknowledged and never shown; one shown carries its
  expiry; conversation controls go to every listed device of an account;
- **groups** (``_groups``): group control messages are applied on receipt,
  group messages come out decrypted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace

from xchat.client import _sentsync
from xchat.client._conversation_tasks import Conversations
from xchat.client._fanout import Fanout
from xchat.client._group_state import GROUP_TYPES
from xchat.client._groups import Groups
from xchat.client._history import History, received_entry, sent_entry
from xchat.client._receiving import Receiver
from xchat.client._sending import Sender
from xchat.client._sentsync import SENT_CONTENT_TYPE
from xchat.client._sessions import EncryptRequest
from xchat.client.errors import ServiceUnavailable
from xchat.client.messages import Failed, Message, SendReceipt

log = logging.getLogger(__name__)


def as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


class Messaging:
    def __init__(
        self,
        *,
        sender: Sender,
        receiver: Receiver,
        fanout: Fanout,
        conversations: Conversations,
        groups: Groups,
        history: History,
        me: Callable[[], tuple[str, str]],
    ) -> None:
        self._sender = sender
        self._receiver = receiver
        self._fanout = fanout
        self._conversations = conversations
        self._groups = groups
        self._history = history
        self._me = me

    async def send(self, account: str, data: bytes, content_type: str) -> list[SendReceipt]:
        """``Client.send``: the message, and a copy to our other devices (sent-message sync)."""
        if content_type == SENT_CONTENT_TYPE:
            raise ValueError(f"content type {SENT_CONTENT_TYPE!r} is the SDK's own (sent-message sync)")
        if content_type in GROUP_TYPES:
            raise ValueError(f"content type {content_type!r} is the SDK's own (groups: use send_group)")
        own = self._me()[0]
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
            self._history.add(sent_entry(receipts[0].message_id, self._me(), account, content_type, data, ttl_s=ttl))
        return receipts  # its ledger row was written with its encryption (``_conversation``)

    async def send_many(
        self, messages: Iterable[tuple[str, bytes | str]], content_type: str
    ) -> list[SendReceipt | Failed]:
        """``Client.send_many``: all in one transaction, with their sent-message sync copies."""
        if content_type == SENT_CONTENT_TYPE:
            raise ValueError(f"content type {SENT_CONTENT_TYPE!r} is the SDK's own (sent-message sync)")
        batch = [(account, as_bytes(body)) for account, body in messages]
        own = self._me()[0]
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

    async def send_control(self, account: str, content_type: str, body: bytes) -> None:
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

    async def shown(self, message: Message) -> list[Message]:
        """What the app is shown of one received message (none, one, or a group's)."""
        if message.content_type in GROUP_TYPES:
            # Group control messages are applied here; group messages come out decrypted.
            opened = await self._groups.receive(message)
        else:
            opened = [_sentsync.unwrap(message, self._me()[0])]
        visible = []
        for shown in opened:
            if self._conversations.ledger.gone(shown.message_id):
                await self._receiver.ack(shown)  # deleted for everyone, or disappeared, meanwhile
                self._groups.acked(shown)
                continue
            expires = self._conversations.ledger.expires_at(shown.message_id)
            visible.append(shown if expires is None else replace(shown, expires_at_ms=expires))
        return visible

    async def ack(self, message: Message) -> None:
        await self._receiver.ack(message)
        self._groups.acked(message)
        self._history.add(received_entry(message))
