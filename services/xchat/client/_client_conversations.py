"""``Client``'s methods for conversations: receipts, disappearing messages, edits, typing, presence, push.

A part of the ``Client`` facade (``client``), which inherits it: each method
hands over to the part that owns it, made and wired in ``Client.__init__``:
``_conversation_tasks`` (its rules in ``_conversation``) sends the controls
through ``_messaging``; ``_signals`` sends typing and presence; push tokens
are registered with mailbox here.
"""

from __future__ import annotations

from xchat.client._conversation_tasks import Conversations
from xchat.client._messaging import Messaging, as_bytes
from xchat.client._signals import Signals
from xchat.client._tokens import Tokens
from xchat.client.messages import ConversationSettings, Message
from xchat.v1 import mailbox_pb2, mailbox_pb2_grpc


class ConversationMethods:
    """``Client``'s methods for conversations (its parts declared here, made in ``Client.__init__``)."""

    _conversations: Conversations
    _messaging: Messaging
    _signals: Signals
    _tokens: Tokens

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

    def set_delivered_receipts(self, enabled: bool) -> None:
        """Delivered receipts on or off for every conversation and group (on by default; this device
        only, kept in its state). Off, this device sends none (those still queued are dropped) and
        reports none of others' (``MessagesDelivered``): the same rule as read receipts and typing."""
        self._conversations.set_delivered_receipts(enabled)

    @property
    def delivered_receipts(self) -> bool:
        """Whether this device sends and reports delivered receipts (``set_delivered_receipts``)."""
        return self._conversations.ledger.delivered_receipts()

    async def mark_read(self, *messages: Message) -> None:
        """Tells the senders that their user read ``messages``: one end-to-end encrypted read receipt
        per sender account for all of them (``MessagesRead`` on their devices), group messages
        included (to each one's sender only, while the group's setting is on). Delivered receipts
        (``MessagesDelivered``) go on their own once a message is durably received, unless
        ``set_delivered_receipts(False)``."""
        await self._conversations.mark_read(messages)

    async def edit(self, message_id: bytes, body: bytes | str) -> None:
        """Replaces the body of a message this device sent (``SendReceipt.message_id``), within 24 h:
        every device of both accounts gets ``MessageEdited``. ``EditRefused`` otherwise."""
        await self._conversations.edit(message_id, as_bytes(body))

    async def delete_for_everyone(self, message_id: bytes) -> None:
        """Deletes a message this device sent, within 24 h, on every device of both accounts
        (``MessageDeleted``; one not yet shown never reaches ``messages()``). ``EditRefused`` otherwise."""
        await self._conversations.delete_for_everyone(message_id)

    async def _send_control(self, account: str, content_type: str, body: bytes) -> None:
        """A conversation control to every listed device of ``account`` (ours: the other ones)."""
        await self._messaging.send_control(account, content_type, body)

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
