"""Values the SDK hands to applications (no protobuf types leak out)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """A decrypted message. Call ``Client.ack(message)`` once it is processed."""

    message_id: bytes
    sender_account: str
    sender_device: str
    counter: int
    sent_at_ms: int
    content_type: str
    body: bytes
    sequence: int
    # Set on a copy of what another device of our own account sent (sent-message
    # sync): the account it was sent to. None for a message received from someone.
    sent_to: str | None = None
    # The group it was sent to (``Client.send_group``); None for a one-to-one message.
    group_id: str | None = None
    # Disappearing messages: when the SDK deletes it (ms since the Unix epoch; a
    # ``MessageExpired`` event then), None when the conversation has no timer.
    expires_at_ms: int | None = None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class SendReceipt:
    """A recipient device's mailbox durably holds the message (quorum of regions).

    ``receipt``: relay's opaque receipt (16 bytes, the same for every retry of
    this message to this device); it reveals no mailbox position.
    """

    message_id: bytes
    recipient_device: str
    receipt: bytes
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Failed:
    """A message that could not be sent to one device; it stays queued when retryable."""

    message_id: bytes
    recipient_device: str
    code: str
    message: str


# -- security events (``Client.events()``) --------------------------------------
#
# What the SDK refused or noticed on the receive path, for the app to show.
# Delivered at least once: an event raised in a receive batch that is rolled
# back (connection lost mid-batch) is raised again when the envelope returns.


@dataclass(frozen=True, slots=True)
class SenderMismatch:
    """A device we have a session with sealed a message claiming another account.

    The message authenticated under the session with ``device`` (which belongs
    to ``account``) but named ``claimed_account`` as its sender: an impersonation
    attempt by that contact. The message was dropped (acknowledged, never shown).
    """

    message_id: bytes
    device: str
    account: str
    claimed_account: str


@dataclass(frozen=True, slots=True)
class SenderCertificateRejected:
    """A message's sender certificate did not hold; the message was dropped (acknowledged, never shown).

    Every sealed message carries the sending device's certificate, signed by its
    account key (docs/crypto.md). ``problem``: "account" (issued for another
    account than the sealed claim), "device" (another device), "key" (another
    identity key than the one that authenticated the message), "expired",
    "signature" (not the pinned account key's) or "malformed". ``sender_account``
    and ``sender_device`` are the sealed layer's claim.
    """

    message_id: bytes
    sender_account: str
    sender_device: str
    problem: str
    detail: str


@dataclass(frozen=True, slots=True)
class IdentityChanged:
    """A known device of ``account`` now speaks with another identity key.

    Pinned on first use, the key changed: a reinstall, or whoever controls the
    directory sitting in the middle. The new session is kept (its messages are
    shown) and the safety number changes; show the user "safety number changed".
    For an account the user verified (``Client.verify``), sending to it raises
    ``IdentityNotApproved`` until ``Client.approve_identity``. Fingerprints are
    the 30-digit displayable fingerprints of the old and new key.
    """

    account: str
    device: str
    old_fingerprint: str
    new_fingerprint: str


@dataclass(frozen=True, slots=True)
class Undecryptable:
    """An envelope that can never be read was dropped (acknowledged, never shown).

    ``sender_account`` and ``sender_device`` are what the sealed layer claims,
    when it opened (None when the envelope was not even sealed to this device):
    unauthenticated, yet what the app needs to ask that contact to resend.
    ``reason`` is for logs and support, not for parsing.
    """

    message_id: bytes
    sender_account: str | None
    sender_device: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceListRejected:
    """The directory served something about ``account``'s devices that its account key did not sign.

    ``problem``: "unsigned", "signature", "account_key_changed", "rollback"
    (the whole list was refused: ``UntrustedDeviceList``), "unlisted" (a
    device the signed list does not name: added by the server or by a token
    alone; it gets no session and its messages are dropped) or "key_mismatch"
    (a bundle or sender whose identity key is not the listed one). ``device``
    is None when the whole list was refused.
    """

    account: str
    device: str | None
    problem: str
    detail: str


@dataclass(frozen=True, slots=True)
class SessionReset:
    """``device`` of ``account`` could not read what we sent it, and the SDK started over.

    That device asked (authenticated by its session) for messages it could
    not decrypt; the SDK began a new session from its fresh prekey bundle
    (unless it had just started one itself) and re-sent ``resent`` of them as
    new messages (new ids, same body and content type). Only what was sent to
    that device in the last 24 hours (at most 2,000 kept) can be re-sent.
    Informational: show "messages re-sent to ..." if the app wants to.
    """

    account: str
    device: str
    resent: int


@dataclass(frozen=True, slots=True)
class KeyTransparencyAlarm:
    """The key transparency log contradicts what the directory served (docs/adr/0014).

    ``problem``: "not_in_log" (a key or device list for ``account`` other than
    the log's: shown to this client only), "stale" (an older list than the
    log's), "missing" (a served list still not in the log after a few epochs,
    or a change dropped from it), "fork" (a log that does not extend the one
    this device saw, e.g. another region's history), "rollback" (an epoch
    older than one already verified), "bad_proof" / "signature"
    (proofs or heads that do not verify), and for our
    own account "account_key_changed" or "unsigned_change" (a key or device
    list this account did not make). Nothing is sent to or accepted from
    ``account`` meanwhile (``KeyTransparencyError``). Show it: it means the
    directory, or a region of it, is lying.

    "split_view": a device of ``account`` sent us (inside a message) an epoch
    root that contradicts ours: the directory showed the two devices two
    histories, or that device lies (an event only; its message is delivered).
    With required auditors (``Client.open(auditor_keys=...)``):
    "audit_signature" (a statement forged in a required auditor's name),
    "audit_mismatch" (an auditor verified another history), "unaudited" (no
    statement covers the head, or the latest is older than the allowed lag).
    """

    account: str
    problem: str
    detail: str


SecurityEvent = SenderMismatch | SenderCertificateRejected | IdentityChanged | Undecryptable | DeviceListRejected | SessionReset | KeyTransparencyAlarm

# -- conversation events (``Client.events()``, issue 14, ``_conversation``) ------------
#
# What the other party's (or our other devices') control messages did: receipts,
# edits, deletes, timer changes, and the control messages that were refused.
# Delivered at least once, like the security events.


@dataclass(frozen=True, slots=True)
class ConversationSettings:
    """What this device holds for the conversation with another account (``Client.conversation_settings``).

    ``disappearing_s``: the timer both parties share (0: off); ``timer_set_at_ms`` and
    ``timer_set_by`` are its version (the latest setting wins on every device).
    ``read_receipts``: this device's own choice; off, it neither sends read receipts
    in this conversation nor reports the other side's.
    """

    disappearing_s: int = 0
    read_receipts: bool = True
    timer_set_at_ms: int = 0
    timer_set_by: str = ""


@dataclass(frozen=True, slots=True)
class MessagesDelivered:
    """``device`` of ``account`` (the account they were sent to) durably holds these messages we sent.

    ``group_id``: set when they are group messages (``send_group``); a member's receipt names the
    ``SendReceipt.message_id`` of what was sent to that member's devices. Not reported while this
    device has delivered receipts off (``Client.set_delivered_receipts``).
    """

    account: str
    device: str
    message_ids: tuple[bytes, ...]
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class MessagesRead:
    """``account``'s user read these messages we sent (on ``device``); only while read receipts
    are on for the conversation on both sides (``Client.set_read_receipts``; for a group,
    ``group_id`` is set and the group's setting counts: ``Client.set_group_read_receipts``)."""

    account: str
    device: str
    message_ids: tuple[bytes, ...]
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class MessageEdited:
    """``sender_account`` replaced the body of its message ``message_id`` in the conversation with
    ``conversation`` (the other account): show ``body`` instead, marked as edited."""

    message_id: bytes
    conversation: str
    sender_account: str
    body: bytes
    edited_at_ms: int

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class MessageDeleted:
    """``sender_account`` deleted its message ``message_id`` for everyone: remove it from the view."""

    message_id: bytes
    conversation: str
    sender_account: str


@dataclass(frozen=True, slots=True)
class MessageExpired:
    """A disappearing message was due: the SDK deleted what it kept of it; remove it from the view.

    ``conversation``: the other account, or for a group message its group id (``group_id`` set too;
    a group message we sent expires once per member account, under each ``SendReceipt.message_id``).
    """

    message_id: bytes
    conversation: str
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class DisappearingTimerChanged:
    """The conversation with ``conversation`` now has this timer (0: off), set by ``set_by``."""

    conversation: str
    seconds: int
    set_by: str
    set_at_ms: int


@dataclass(frozen=True, slots=True)
class ControlRejected:
    """A control message (``kind``: "receipt", "timer", "edit", "delete") from ``device`` of
    ``account`` was refused and nothing of it applied. ``reason`` is for logs, not for parsing:
    a receipt for a message not sent to that account, an edit of someone else's message or
    outside the window, a conversation its sender is not part of, a malformed body."""

    account: str
    device: str
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class OrderGap:
    """``message_id`` from ``device`` of ``account`` reached ``messages()`` before ``missing``
    earlier messages of the same sender device: they did not arrive within the reorder window
    (``Client.open(reorder_window_s=)``, ADR 0018). One that still comes later is handed over
    then, after the messages that followed it. Informational ("some messages may be missing")."""

    account: str
    device: str
    message_id: bytes
    missing: int


ConversationEvent = (
    OrderGap
    | MessagesDelivered
    | MessagesRead
    | MessageEdited
    | MessageDeleted
    | MessageExpired
    | DisappearingTimerChanged
    | ControlRejected
)
