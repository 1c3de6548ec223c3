"""The sending side of conversation controls, and the two background tasks (issue 14).

``Conversations`` is what ``Client`` calls: it sends timers, read receipts,
edits and deletes (control payloads, through ``send_control``: the listed
devices of one account, sealed and padded like messages), and runs

- the **receipt sender**: delivered receipts are queued in the state file in
  the same transaction as the messages they acknowledge (``Ledger.stored``);
  this task sends them ``RECEIPT_DELAY_S`` later, one control per sender
  account and up to 128 ids (so a backlog of 500 costs 4 receipts, not 500),
  and removes them once encrypted into the outbox (which resends them itself);
- the **sweeper**: sleeps until the next disappearing message is due and
  deletes what is due in one transaction (``Ledger.expire_due``).

The rules for what is accepted are in ``_conversation``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from xchat.client import _controls
from xchat.client._conversation import EDIT_WINDOW_MS, Ledger, group_key
from xchat.client.crypto import CryptoError
from xchat.client.errors import ClientError, EditRefused, ServiceUnavailable
from xchat.client.messages import ConversationSettings, Message

log = logging.getLogger(__name__)

# Delivered receipts wait this long so that one control covers a whole backlog.
RECEIPT_DELAY_S = 0.2
RECEIPT_RETRY_S = (1.0, 2.0, 5.0, 15.0, 30.0)
# The sweeper looks at least this often (a clock step, a row added by another path).
SWEEP_MAX_SLEEP_S = 30.0

SendControl = Callable[[str, str, bytes], Awaitable[None]]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Conversations:
    def __init__(self, ledger: Ledger, *, me: Callable[[], str], send_control: SendControl) -> None:
        self.ledger = ledger
        self._me = me
        self._send_control = send_control
        self._receipts_wake = asyncio.Event()
        self._sweep_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        ledger.on_receipts_due = self._wake_receipts
        ledger.on_due_changed = self._sweep_wake.set

    def _wake_receipts(self) -> None:
        self._receipts_wake.set()
        self.start()

    def start(self) -> None:
        """Starts the background tasks (from a running event loop); idempotent."""
        if self._tasks or self._closed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._tasks = [
            asyncio.create_task(self._receipt_loop(), name="xchat.client.conversation.receipts"),
            asyncio.create_task(self._sweep_loop(), name="xchat.client.conversation.sweeper"),
        ]
        self._receipts_wake.set()  # receipts a previous run left queued

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- settings and what the app calls ---------------------------------

    def settings(self, conversation: str) -> ConversationSettings:
        return self.ledger.settings(conversation)

    def set_read_receipts(self, conversation: str, enabled: bool) -> None:
        with self.ledger.transaction():
            current = self.ledger.settings(conversation)
            self.ledger.put_settings(conversation, ConversationSettings(
                current.disappearing_s, enabled, current.timer_set_at_ms, current.timer_set_by
            ))

    def set_delivered_receipts(self, enabled: bool) -> None:
        with self.ledger.transaction():
            self.ledger.set_delivered_receipts(enabled)

    async def set_timer(self, conversation: str, seconds: int) -> None:
        if conversation == self._me():
            raise ValueError("a disappearing timer is set on a conversation with another account")
        own, set_at = self._me(), _now_ms()
        body = _controls.encode_timer(conversation, seconds, set_at)  # ValueError out of bounds
        with self.ledger.transaction():
            self.ledger.apply_timer(conversation, seconds, set_at, own)
        await self._send_control(conversation, _controls.TIMER_CONTENT_TYPE, body)
        await self._to_own_devices(_controls.TIMER_CONTENT_TYPE, body)

    async def mark_read(self, messages: Sequence[Message]) -> None:
        """Read receipts for ``messages``, one per sender account (when on for that conversation)."""
        by_sender: dict[str, list[bytes]] = {}
        for message in messages:
            if message.sent_to is not None or message.sender_account == self._me():
                continue  # our own (sent-message sync): nobody to tell
            # A group message's read receipt goes pairwise to its sender, under the group's setting.
            key = message.sender_account if message.group_id is None else group_key(message.group_id)
            if self.ledger.settings(key).read_receipts:
                by_sender.setdefault(message.sender_account, []).append(message.message_id)
        for account, ids in by_sender.items():
            for start in range(0, len(ids), _controls.RECEIPT_IDS_MAX):
                body = _controls.encode_receipt(_controls.READ, ids[start : start + _controls.RECEIPT_IDS_MAX])
                await self._send_control(account, _controls.RECEIPT_CONTENT_TYPE, body)

    async def edit(self, message_id: bytes, body: bytes) -> None:
        conversation = self._own_within_window(message_id, "edit")
        payload = _controls.encode_edit(conversation, message_id, body)
        await self._send_control(conversation, _controls.EDIT_CONTENT_TYPE, payload)
        await self._to_own_devices(_controls.EDIT_CONTENT_TYPE, payload)

    async def delete_for_everyone(self, message_id: bytes) -> None:
        conversation = self._own_within_window(message_id, "delete")
        payload = _controls.encode_delete(conversation, message_id)
        await self._send_control(conversation, _controls.DELETE_CONTENT_TYPE, payload)
        await self._to_own_devices(_controls.DELETE_CONTENT_TYPE, payload)
        with self.ledger.transaction():
            self.ledger.delete_own(message_id)

    def _own_within_window(self, message_id: bytes, what: str) -> str:
        row = self.ledger.row(message_id)
        if row is None or not row.outgoing or row.sender_account != self._me() or row.conversation == self._me():
            raise EditRefused(message_id, f"cannot {what} it: not a message this device sent to another account")
        if row.gone:
            raise EditRefused(message_id, f"cannot {what} it: it was deleted or has disappeared")
        if self.ledger.group_of(message_id) is not None:
            raise EditRefused(message_id, f"cannot {what} it: a group message (not built for groups yet)")
        if _now_ms() - row.sent_at_ms > EDIT_WINDOW_MS:
            raise EditRefused(message_id, f"cannot {what} it: sent more than {EDIT_WINDOW_MS // 3_600_000} h ago")
        return row.conversation

    async def _to_own_devices(self, content_type: str, body: bytes) -> None:
        """Our other devices converge too; their failure never fails the call (like sent-message sync)."""
        try:
            await self._send_control(self._me(), content_type, body)
        except ClientError as exc:
            log.info("control not copied to our other devices: %s", exc)

    # -- background ------------------------------------------------------

    async def _receipt_loop(self) -> None:
        failures = 0
        while not self._closed:
            await self._receipts_wake.wait()
            await asyncio.sleep(RECEIPT_DELAY_S)
            self._receipts_wake.clear()
            try:
                for account, kind, ids in self.ledger.receipts_due():
                    try:
                        await self._send_control(account, _controls.RECEIPT_CONTENT_TYPE, _controls.encode_receipt(kind, ids))
                    except (ClientError, CryptoError) as exc:
                        if isinstance(exc, ServiceUnavailable):
                            raise  # no endpoint: everything waits, in order
                        # That account cannot be written to (gone, untrusted list, bad bundle):
                        # its receipts are dropped, so they never hold up everyone else's.
                        log.info("dropping %d delivered receipts to %r: %s", len(ids), account, exc)
                    with self.ledger.transaction(durable=False):
                        self.ledger.receipts_sent(account, kind, ids)
                failures = 0
            except ServiceUnavailable as exc:
                delay = RECEIPT_RETRY_S[min(failures, len(RECEIPT_RETRY_S) - 1)]
                log.info("delivered receipts postponed by %.0f s: %s", delay, exc)
                failures += 1
                await asyncio.sleep(delay)
                self._receipts_wake.set()

    async def _sweep_loop(self) -> None:
        while not self._closed:
            self._sweep_wake.clear()
            if not self.ledger.in_transaction:
                with self.ledger.transaction():
                    self.ledger.expire_due(_now_ms())
            due = self.ledger.next_due_ms()
            sleep = SWEEP_MAX_SLEEP_S if due is None else min(SWEEP_MAX_SLEEP_S, max(0.0, (due - _now_ms()) / 1000))
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can drop a cancellation (close hung).
                async with asyncio.timeout(max(sleep, 0.01)):
                    await self._sweep_wake.wait()
            except TimeoutError:
                pass
