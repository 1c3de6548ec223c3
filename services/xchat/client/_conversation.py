"""Per-conversation state and the control messages that change it (issue 14).

A conversation is this account and one other (``conversation`` names the other
account). What it holds, in the device's state file:

- settings (a sealed meta row per conversation): the disappearing timer with
  its version, and whether read receipts are on (local only);
- the ledger (``conversation_messages``): for each message sent or received,
  its id, conversation, sender account, the payload's ``sent_at_ms`` and, in a
  conversation with a timer, when this device deletes it. No plaintext.
  Receipts, edits and deletes are checked against it.

Control messages (wire forms in ``_controls``) are opened by the receive path
like messages and applied here inside the receive batch's transaction, so a
control and what it changes are committed together. The rules:

- a **receipt** counts only for messages we sent *to the account that sends
  it*; ids sent to someone else (or received by us) are refused with
  ``ControlRejected``, ids we do not know (sent by another of our devices)
  ignored. Read receipts are not expected while this device has them off for
  that conversation (like Signal: off means neither sent nor shown).
- a **timer** names the conversation as its sender sees it: a peer may only
  name us (so only the two parties change it), our own devices name the peer.
  Convergence: each setting carries ``(set_at_ms, set_by)``; a device keeps the
  greatest pair it has seen (lexicographic: the later clock wins, the account
  name breaks a tie), so every device of both parties ends on the same timer
  whatever order the controls arrive in.
- an **edit** or **delete** applies only to a message whose ledger row names the
  control's sender account as its sender, in the same conversation, within
  ``EDIT_WINDOW_MS`` of the original's ``sent_at_ms`` (the control's own
  ``sent_at_ms``, no more than ``CLOCK_SKEW_MS`` ahead of ours). The SDK refuses
  to send one outside the window (``EditRefused``).

Groups (``_group_conversation``, hooked in here): a group message has ledger
rows too, one per member account it was sent to, so the receipt rule above
covers group receipts unchanged; its timer is the group's.

Disappearing messages: a message sent or received while the conversation has
a timer of T seconds is deleted by this device T seconds after it sent or
received it (inbox row, the plaintext kept for re-sending, then a WAL scrub),
with a ``MessageExpired`` event; its envelopes are sent with T as relay's TTL
hint, so the server's copy (stored before any device received it) expires no
later. A recipient offline for longer than T never receives it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

from xchat.client import _controls
from xchat.client._controls import Delete, Edit, Receipt, Timer
from xchat.client._group_state import GROUP_MESSAGE_TYPE
from xchat.client._sentsync import SENT_CONTENT_TYPE
from xchat.client._sessions import EncryptRequest
from xchat.client._state import InboxItem, LocalState
from xchat.client.crypto import Payload
from xchat.client.messages import (
    ControlRejected,
    ConversationEvent,
    ConversationSettings,
    DisappearingTimerChanged,
    MessageDeleted,
    MessageEdited,
    MessageExpired,
    MessagesDelivered,
    MessagesRead,
)

log = logging.getLogger(__name__)

# Edits and deletes for everyone: within a day of the original (Signal's edit window).
EDIT_WINDOW_MS = 24 * 3600 * 1000
# How far ahead of our clock a control's own time may be.
CLOCK_SKEW_MS = 5 * 60 * 1000
# Ledger rows kept: receipts and edits for older messages are ignored. Rows of
# messages still due to disappear are kept until they did.
LEDGER_MAX = 20_000
LEDGER_AGE_MS = 30 * 24 * 3600 * 1000
# Content types of the SDK's own features that reach the app's side (groups, sent-message sync).
SDK_TYPE_PREFIX = "application/x-xchat+"
# Delivered receipts waiting to be sent (one per received message; sent in batches).
RECEIPTS_DUE_MAX = 10_000
# This device's app-wide delivered-receipt choice (``Client.set_delivered_receipts``).
DELIVERED_META = "delivered_receipts"


def group_key(group_id: str) -> str:
    """A group's settings key (account names have no ':', so never an account's)."""
    return f"group:{group_id}"

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversation_messages (
    message_id BLOB PRIMARY KEY, conversation TEXT NOT NULL, sender_account TEXT NOT NULL,
    outgoing INTEGER NOT NULL, sent_at_ms INTEGER NOT NULL, expires_ms INTEGER, gone INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS conversation_messages_due ON conversation_messages(expires_ms) WHERE gone = 0;
CREATE INDEX IF NOT EXISTS conversation_messages_by_age ON conversation_messages(sent_at_ms);
CREATE TABLE IF NOT EXISTS receipts_due (
    account TEXT NOT NULL, kind INTEGER NOT NULL, message_id BLOB NOT NULL, PRIMARY KEY (account, kind, message_id));
"""


@dataclass(frozen=True, slots=True)
class LedgerRow:
    conversation: str
    sender_account: str
    outgoing: bool
    sent_at_ms: int
    gone: bool


def _now_ms() -> int:
    return int(time.time() * 1000)


class Ledger:
    """Settings and the message ledger over the state's connection (always inside the caller's transaction)."""

    def __init__(self, state: LocalState, *, me: Callable[[], str], on_event: Callable[[ConversationEvent], None]) -> None:
        self._state = state
        self._db = state.db
        self._db.executescript(SCHEMA)
        self._me = me
        self._on_event = on_event
        # Set when a row with an expiry is added: the sweeper looks again.
        self.on_due_changed: Callable[[], None] = lambda: None
        # Set when delivered receipts are queued: the receipt sender wakes.
        self.on_receipts_due: Callable[[], None] = lambda: None
        # Groups (``_group_conversation``): the group a ledger row's message belongs to, a group
        # message being encrypted (its rows), and messages gone (their decrypted group plaintext).
        self.group_of: Callable[[bytes], str | None] = lambda message_id: None
        self.on_group_encrypted: Callable[[EncryptRequest, Payload], None] = lambda request, payload: None
        self.on_removed: Callable[[list[bytes]], None] = lambda message_ids: None

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[None]:
        return self._state.transaction(durable=durable)

    @property
    def in_transaction(self) -> bool:
        return self._state.in_transaction

    # -- settings ------------------------------------------------------

    def settings(self, conversation: str) -> ConversationSettings:
        raw = self._state.get_meta(f"conversation:{conversation}")
        if raw is None:
            return ConversationSettings()
        values = json.loads(raw)
        return ConversationSettings(
            disappearing_s=int(values["disappearing_s"]),
            read_receipts=bool(values["read_receipts"]),
            timer_set_at_ms=int(values["timer_set_at_ms"]),
            timer_set_by=str(values["timer_set_by"]),
        )

    def put_settings(self, conversation: str, settings: ConversationSettings) -> None:
        values = {
            "disappearing_s": settings.disappearing_s,
            "read_receipts": settings.read_receipts,
            "timer_set_at_ms": settings.timer_set_at_ms,
            "timer_set_by": settings.timer_set_by,
        }
        self._state.set_meta(f"conversation:{conversation}", json.dumps(values).encode())

    def apply_timer(self, conversation: str, seconds: int, set_at_ms: int, set_by: str) -> bool:
        """Keeps the setting if it is newer than the one held (the version rule); True if it was."""
        current = self.settings(conversation)
        if (set_at_ms, set_by) <= (current.timer_set_at_ms, current.timer_set_by):
            return False
        self.put_settings(
            conversation, replace(current, disappearing_s=seconds, timer_set_at_ms=set_at_ms, timer_set_by=set_by)
        )
        return True

    def delivered_receipts(self) -> bool:
        """This device's app-wide choice (on by default): off, it sends no delivered receipts and
        reports none (the same rule as read receipts and typing: who withholds them sees none)."""
        return self._state.get_meta(DELIVERED_META) != b"0"

    def set_delivered_receipts(self, enabled: bool) -> None:
        """Inside the caller's transaction; turning them off drops those still queued."""
        self._state.set_meta(DELIVERED_META, b"1" if enabled else b"0")
        if not enabled:
            self._db.execute("DELETE FROM receipts_due WHERE kind = ?", (_controls.DELIVERED,))

    # -- the ledger ----------------------------------------------------

    def row(self, message_id: bytes) -> LedgerRow | None:
        found = self._db.execute(
            "SELECT conversation, sender_account, outgoing, sent_at_ms, gone FROM conversation_messages WHERE message_id = ?",
            (message_id,),
        ).fetchone()
        if found is None:
            return None
        return LedgerRow(found[0], found[1], bool(found[2]), int(found[3]), bool(found[4]))

    def record(
        self, message_id: bytes, conversation: str, sender: str, *, outgoing: bool, sent_at_ms: int, timer_s: int | None = None
    ) -> int | None:
        """A message sent or received now; returns when this device deletes it (None: no timer).
        ``timer_s``: the timer it is under (a group's); None: the conversation's."""
        timer = self.settings(conversation).disappearing_s if timer_s is None else timer_s
        expires = _now_ms() + timer * 1000 if timer else None
        self._db.execute(
            "INSERT OR IGNORE INTO conversation_messages"
            "(message_id, conversation, sender_account, outgoing, sent_at_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (message_id, conversation, sender, int(outgoing), sent_at_ms, expires),
        )
        # Bounded: old rows go (rows still due to disappear stay until they did). Two deletes,
        # each a range of one b-tree (rowids grow with every insert; sent_at_ms is indexed):
        # without that index the age bound scanned the table, 0.8-1.6 ms of CPU per received
        # message at LEDGER_MAX rows; with it ~40 us (tests/client/test_client_conversation_ledger.py).
        self._db.execute(
            "DELETE FROM conversation_messages WHERE rowid <= (SELECT max(rowid) FROM conversation_messages) - ?"
            " AND (expires_ms IS NULL OR gone = 1)",
            (LEDGER_MAX,),
        )
        self._db.execute(
            "DELETE FROM conversation_messages WHERE sent_at_ms < ? AND (expires_ms IS NULL OR gone = 1)",
            (_now_ms() - LEDGER_AGE_MS,),
        )
        if expires is not None:
            self.on_due_changed()
        return expires

    def expires_at(self, message_id: bytes) -> int | None:
        found = self._db.execute("SELECT expires_ms FROM conversation_messages WHERE message_id = ?", (message_id,)).fetchone()
        return int(found[0]) if found is not None and found[0] is not None else None

    def gone(self, message_id: bytes) -> bool:
        found = self.row(message_id)
        return found is not None and found.gone

    def next_due_ms(self) -> int | None:
        found = self._db.execute("SELECT min(expires_ms) FROM conversation_messages WHERE gone = 0").fetchone()
        return int(found[0]) if found[0] is not None else None

    def expire_due(self, now_ms: int) -> int:
        """Deletes what is due (inside the caller's transaction): inbox rows, kept plaintexts; how many."""
        due = self._db.execute(
            "SELECT message_id, conversation FROM conversation_messages WHERE gone = 0 AND expires_ms <= ?", (now_ms,)
        ).fetchall()
        for message_id, conversation in due:
            self._remove(bytes(message_id))
            group_id = self.group_of(bytes(message_id))
            self._on_event(MessageExpired(bytes(message_id), conversation if group_id is None else group_id, group_id))
        if due:
            self._state.delete_resendable(bytes(m) for m, _ in due)
            self.on_removed([bytes(m) for m, _ in due])
        return len(due)

    def _remove(self, message_id: bytes) -> None:
        """The message is gone for good: no plaintext kept, never shown (again)."""
        self._state.mark_seen(message_id)  # deletes the inbox row; a redelivery is acknowledged unseen
        self._db.execute("UPDATE conversation_messages SET gone = 1 WHERE message_id = ?", (message_id,))

    def delete_own(self, message_id: bytes) -> None:
        self._remove(message_id)
        self._state.delete_resendable([message_id])

    # -- delivered receipts waiting to be sent -------------------------

    def queue_receipt(self, account: str, kind: int, message_ids: Iterable[bytes]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO receipts_due(account, kind, message_id) VALUES (?, ?, ?)",
            [(account, kind, m) for m in message_ids],
        )
        self._db.execute(
            "DELETE FROM receipts_due WHERE rowid <= (SELECT max(rowid) FROM receipts_due) - ?", (RECEIPTS_DUE_MAX,)
        )
        self.on_receipts_due()

    def receipts_due(self) -> list[tuple[str, int, list[bytes]]]:
        """(account, kind, ids) batches of at most ``RECEIPT_IDS_MAX`` ids."""
        batches: dict[tuple[str, int], list[bytes]] = {}
        for account, kind, message_id in self._db.execute("SELECT account, kind, message_id FROM receipts_due ORDER BY rowid"):
            batches.setdefault((account, int(kind)), []).append(bytes(message_id))
        out = []
        for (account, kind), ids in batches.items():
            for start in range(0, len(ids), _controls.RECEIPT_IDS_MAX):
                out.append((account, kind, ids[start : start + _controls.RECEIPT_IDS_MAX]))
        return out

    def receipts_sent(self, account: str, kind: int, message_ids: list[bytes]) -> None:
        self._db.executemany(
            "DELETE FROM receipts_due WHERE account = ? AND kind = ? AND message_id = ?",
            [(account, kind, m) for m in message_ids],
        )

    # -- the receive path's hooks (inside its transaction) --------------

    def stored(self, item: InboxItem, payload: Payload) -> None:
        """A message stored for the app: into the ledger; a delivered receipt is due to its sender."""
        if payload.content_type.startswith(SDK_TYPE_PREFIX) and payload.content_type != SENT_CONTENT_TYPE:
            return  # the SDK's own (groups' state, sender keys, group messages): not a conversation message
        own = self._me()
        if item.sender_account != own:
            self.record(item.message_id, item.sender_account, item.sender_account, outgoing=False, sent_at_ms=payload.sent_at_ms)
            if self.delivered_receipts():
                self.queue_receipt(item.sender_account, _controls.DELIVERED, [item.message_id])
            return
        conversation = own
        if payload.content_type == SENT_CONTENT_TYPE and payload.body:
            # Another of our devices sent it (sent-message sync): the conversation is its recipient.
            size = payload.body[0]
            conversation = payload.body[1 : 1 + size].decode("ascii", errors="replace") or own
        self.record(item.message_id, conversation, own, outgoing=True, sent_at_ms=payload.sent_at_ms)

    def encrypted(self, request: EncryptRequest, payload: Payload) -> None:
        """An app message we are sending (inside its encryption's savepoint): into the ledger, so a
        receipt, an edit or the sweeper finds it from the moment it can leave."""
        own = self._me()
        if payload.content_type == GROUP_MESSAGE_TYPE:
            self.on_group_encrypted(request, payload)  # one row per member account (``_group_conversation``)
            return
        if request.account == own or payload.content_type.startswith(SDK_TYPE_PREFIX):
            return  # to ourselves (sent-message sync), or the SDK's own (group state, sender keys)
        self.record(payload.message_id, request.account, own, outgoing=True, sent_at_ms=payload.sent_at_ms)

    def ttl_for(self, account: str, content_type: str) -> int:
        """Relay's TTL hint for an app message to ``account``: the conversation's timer (0: none)."""
        if account == self._me() or content_type.startswith(SDK_TYPE_PREFIX):
            return 0
        return self.settings(account).disappearing_s

    def control(self, account: str, device: str, payload: Payload) -> bool:
        """Applies a conversation control from ``device`` of ``account``; False: not one of ours."""
        kind = _controls.KINDS.get(payload.content_type)
        if kind is None:
            return False
        try:
            control = _controls.decode(payload.content_type, payload.body)
        except ValueError as exc:
            self._reject(account, device, kind, f"malformed: {exc}")
            return True
        if isinstance(control, Receipt):
            self._receipt(account, device, control)
            return True
        conversation = self._conversation_of(account, control.conversation)
        if conversation is None:
            self._reject(account, device, kind, f"names a conversation ({control.conversation!r}) its sender is not part of")
        elif isinstance(control, Timer):
            if self.apply_timer(conversation, control.seconds, control.set_at_ms, account):
                self._on_event(DisappearingTimerChanged(conversation, control.seconds, account, control.set_at_ms))
        else:
            self._edit_or_delete(account, device, kind, conversation, control, payload.sent_at_ms)
        return True

    def _conversation_of(self, sender: str, named: str) -> str | None:
        """The conversation a control is about: a peer may only name us; our own devices name the peer."""
        own = self._me()
        if sender == own:
            return named
        return sender if named == own else None

    def _receipt(self, account: str, device: str, receipt: Receipt) -> None:
        delivered = receipt.kind == _controls.DELIVERED
        if delivered and not self.delivered_receipts():
            return  # off on this device: neither sent nor reported
        if not delivered and not self.settings(account).read_receipts and not self._any_group(receipt.message_ids):
            return  # off for this conversation: read receipts are not expected
        # A group message sent to ``account`` has a row of its own naming it (one id per member
        # account, ``_group_conversation``), so the same rule covers groups; its event says the group.
        accepted: dict[str | None, list[bytes]] = {}
        refused = 0
        for message_id in receipt.message_ids:
            row = self.row(message_id)
            if row is None:
                continue  # sent by another of our devices, or pruned: nothing to say
            if not (row.outgoing and row.conversation == account and row.sender_account == self._me()):
                refused += 1
                continue
            group_id = self.group_of(message_id)
            if not delivered and not self.settings(account if group_id is None else group_key(group_id)).read_receipts:
                continue  # read receipts off for that conversation (or group) on this device
            accepted.setdefault(group_id, []).append(message_id)
        if refused:
            self._reject(account, device, "receipt", f"{refused} of its ids name messages not sent to {account!r}")
        event = MessagesDelivered if delivered else MessagesRead
        for group_id, ids in accepted.items():
            self._on_event(event(account, device, tuple(ids), group_id))

    def _any_group(self, message_ids: Iterable[bytes]) -> bool:
        return any(self.group_of(m) is not None for m in message_ids)

    def _edit_or_delete(
        self, account: str, device: str, kind: str, conversation: str, control: Edit | Delete, sent_at_ms: int
    ) -> None:
        row = self.row(control.target)
        if row is None or row.gone:
            log.info("%s from %s of a message this device does not hold: ignored", kind, account)
            return
        if row.sender_account != account or row.conversation != conversation:
            self._reject(account, device, kind, f"message {control.target.hex()} is not its own")
            return
        if not row.sent_at_ms <= sent_at_ms <= row.sent_at_ms + EDIT_WINDOW_MS or sent_at_ms > _now_ms() + CLOCK_SKEW_MS:
            self._reject(account, device, kind, "outside the edit window")
            return
        if isinstance(control, Delete):
            self._remove(control.target)
            self._on_event(MessageDeleted(control.target, conversation, account))
            return
        stored = self._state.inbox_item(control.target)
        if stored is not None:  # not acknowledged yet: a redelivery shows the edited text
            original = Payload.decode(stored.payload)
            self._state.replace_inbox_payload(control.target, replace(original, body=control.body).encode())
        self._on_event(MessageEdited(control.target, conversation, account, control.body, sent_at_ms))

    def _reject(self, account: str, device: str, kind: str, reason: str) -> None:
        log.warning("refused %s control from device %s of %r: %s", kind, device, account, reason)
        self._on_event(ControlRejected(account, device, kind, reason))
