"""Receipts and disappearing messages in groups (issue 14; docs/adr/0016, addendum).

ADR 0016's model carries over unchanged: receipts are pairwise control
messages, checked against the ledger, and a disappearing message is deleted
by each device a timer's length after it sent or received it. What groups add
is kept here, wired into ``_conversation.Ledger`` and ``_groups.Groups`` by
hooks:

- **Sent group messages** get one ledger row per member account, under the
  pairwise message id that account's devices receive (``send_group`` encrypts
  once under the sender key, then one pairwise payload per account, each with
  its own id). A receipt from ``bob`` therefore counts only for the id sent to
  bob, by the ledger's one-to-one rule, and a member (or anyone) naming
  another member's id is refused (``ControlRejected``) exactly as in a
  conversation.
- **Received group messages** (decrypted for the first time, in that
  transaction): a ledger row under the conversation key ``group:<id>`` (never
  an account's: account names have no ':'), with the group's timer, and a
  delivered receipt queued to the account whose device sent it, pairwise, by
  the same batching receipt sender. Read receipts go from ``mark_read`` to
  each message's sender account, while the group's read-receipt setting on
  this device is on (``Client.set_group_read_receipts``).
- **The timer** is a field of the group's state (``_group_state``): any member
  sets it with a state change, which every member device applies by the
  state's rules (only a current member's change counts; the highest version
  wins), so all devices converge on one timer. A sender's group message
  carries the timer it held as relay's TTL hint (``Nats-TTL``): the server's
  copy expires no later than any device's.
- ``group_messages`` maps each of those ids to its group, so events say which
  group (``MessagesDelivered.group_id``, ``MessagesRead.group_id``,
  ``MessageExpired.group_id``). No plaintext is kept here.
"""

from __future__ import annotations

from collections.abc import Callable

from xchat.client import _controls
from xchat.client._conversation import Ledger, group_key
from xchat.client._group_state import GroupStore
from xchat.client._groups import Groups
from xchat.client._sessions import EncryptRequest
from xchat.client._state import LocalState
from xchat.client.crypto import CryptoError, Payload
from xchat.client.crypto.sender_keys import parse_header
from xchat.client.groups import Group
from xchat.client.messages import Message

SCHEMA = """
CREATE TABLE IF NOT EXISTS group_messages (message_id BLOB PRIMARY KEY, group_id TEXT NOT NULL);
"""
# Rows whose ledger row is gone (pruned by its bounds) are dropped every this many new rows.
PRUNE_EVERY = 256


class GroupConversations:
    def __init__(self, state: LocalState, ledger: Ledger, groups: Groups, *, me: Callable[[], str]) -> None:
        self._ledger = ledger
        self._store = GroupStore(state)
        self._db = state.db
        self._db.executescript(SCHEMA)
        self._me = me
        self._added = 0
        ledger.group_of = self.group_of
        ledger.on_group_encrypted = self.encrypted
        ledger.on_removed = self.removed
        groups.on_opened = self.opened

    def group_of(self, message_id: bytes) -> str | None:
        found = self._db.execute("SELECT group_id FROM group_messages WHERE message_id = ?", (message_id,)).fetchone()
        return None if found is None else str(found[0])

    def _link(self, message_id: bytes, group_id: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO group_messages(message_id, group_id) VALUES (?, ?)", (message_id, group_id))
        self._added += 1
        if self._added % PRUNE_EVERY == 0:
            self._db.execute(
                "DELETE FROM group_messages WHERE message_id NOT IN (SELECT message_id FROM conversation_messages)"
            )

    def encrypted(self, request: EncryptRequest, payload: Payload) -> None:
        """A group message to ``request.account``'s devices (inside its encryption's savepoint): its row."""
        try:
            group_id = parse_header(payload.body).group_id.hex()
        except CryptoError:
            return  # not ours to judge here: the receivers refuse it
        self._link(payload.message_id, group_id)
        # The row names the member account it went to: only that account's receipts count for it.
        self._ledger.record(
            payload.message_id, request.account, self._me(), outgoing=True, sent_at_ms=payload.sent_at_ms, timer_s=request.ttl_s
        )

    def opened(self, message: Message, group: Group, sender: str) -> None:
        """A group message decrypted for the first time (inside that transaction): its row, its
        disappearing time under the group's timer, and a delivered receipt to the account that sent it."""
        own = self._me()
        delivered_by = message.sender_account  # the pairwise sender: its ledger holds this id
        self._link(message.message_id, group.group_id)
        self._ledger.record(
            message.message_id,
            group_key(group.group_id),
            delivered_by,
            outgoing=delivered_by == own,
            sent_at_ms=message.sent_at_ms,
            timer_s=group.disappearing_s,
        )
        if delivered_by != own and self._ledger.delivered_receipts():
            self._ledger.queue_receipt(delivered_by, _controls.DELIVERED, [message.message_id])

    def removed(self, message_ids: list[bytes]) -> None:
        """Messages gone (disappeared): their decrypted group plaintext, if not acked yet, too."""
        for message_id in message_ids:
            if self.group_of(message_id) is not None:
                self._store.forget_read(message_id)
