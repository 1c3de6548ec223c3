"""Conversation control messages (issue 14): receipts, the disappearing timer, edits and deletes.

Each is the body of an ordinary payload whose content type starts with the SDK's
``CONTROL_PREFIX``: encrypted, sealed and padded like a message (the payload's
160-byte blocks), so the servers cannot tell one from a short text. Apps can
neither send these content types nor receive them (``_sessions``). Wire forms,
each starting with ``format u8 = 1``::

    receipt  format || kind u8 (1 delivered, 2 read) || count u8 (1..128) || count x id (16)
    timer    format || conversation || seconds u32 (0 = off) || set_at_ms u64
    edit     format || conversation || target id (16) || body (the rest, up to MAX_EDIT_BODY)
    delete   format || conversation || target id (16)

    conversation = u8 len (1..64) || account (ASCII): the account on the other side
                   of the conversation, as the sender sees it (for a message from
                   alice to bob, "bob"; on alice's own other devices, "bob" too).

Decoding is strict (exact lengths, bounds, no trailing bytes) and raises
``ValueError`` with a sentence, which ``_conversation`` turns into a
``ControlRejected`` event. This module is pure (no state, no network).
"""

from __future__ import annotations

from dataclasses import dataclass

from xchat.client._retries import CONTROL_PREFIX

RECEIPT_CONTENT_TYPE = CONTROL_PREFIX + "receipt"
TIMER_CONTENT_TYPE = CONTROL_PREFIX + "timer"
EDIT_CONTENT_TYPE = CONTROL_PREFIX + "edit"
DELETE_CONTENT_TYPE = CONTROL_PREFIX + "delete"
KINDS = {
    RECEIPT_CONTENT_TYPE: "receipt",
    TIMER_CONTENT_TYPE: "timer",
    EDIT_CONTENT_TYPE: "edit",
    DELETE_CONTENT_TYPE: "delete",
}

FORMAT = 1
DELIVERED = 1
READ = 2
ID_SIZE = 16
# Ids one receipt covers: a Sync batch holds at most 128 envelopes.
RECEIPT_IDS_MAX = 128
ACCOUNT_MAX = 64
# Longest disappearing timer: four weeks (Signal's longest preset); the mailbox TTL
# may be shorter, then the server's copy goes at the mailbox TTL, even earlier.
TIMER_MAX_S = 28 * 24 * 3600
# An edit's new body: what one payload carries, less this control's own fields.
MAX_EDIT_BODY = 64 * 1024 - 1 - 1 - ACCOUNT_MAX - ID_SIZE


@dataclass(frozen=True, slots=True)
class Receipt:
    kind: int
    message_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Timer:
    conversation: str
    seconds: int
    set_at_ms: int


@dataclass(frozen=True, slots=True)
class Edit:
    conversation: str
    target: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    conversation: str
    target: bytes


Control = Receipt | Timer | Edit | Delete


def _account(account: str) -> bytes:
    raw = account.encode("ascii")
    if not 1 <= len(raw) <= ACCOUNT_MAX:
        raise ValueError(f"account name must be 1..{ACCOUNT_MAX} ASCII bytes")
    return bytes([len(raw)]) + raw


def encode_receipt(kind: int, message_ids: list[bytes]) -> bytes:
    if kind not in (DELIVERED, READ) or not 1 <= len(message_ids) <= RECEIPT_IDS_MAX:
        raise ValueError(f"a receipt is delivered or read, for 1..{RECEIPT_IDS_MAX} ids")
    if any(len(m) != ID_SIZE for m in message_ids):
        raise ValueError("message ids are 16 bytes")
    return bytes([FORMAT, kind, len(message_ids)]) + b"".join(message_ids)


def encode_timer(conversation: str, seconds: int, set_at_ms: int) -> bytes:
    if not 0 <= seconds <= TIMER_MAX_S:
        raise ValueError(f"a disappearing timer is 0 (off) to {TIMER_MAX_S} seconds")
    return bytes([FORMAT]) + _account(conversation) + seconds.to_bytes(4, "big") + set_at_ms.to_bytes(8, "big")


def encode_edit(conversation: str, target: bytes, body: bytes) -> bytes:
    if len(body) > MAX_EDIT_BODY:
        raise ValueError(f"an edited body is at most {MAX_EDIT_BODY} bytes")
    return bytes([FORMAT]) + _account(conversation) + target + body


def encode_delete(conversation: str, target: bytes) -> bytes:
    return bytes([FORMAT]) + _account(conversation) + target


class _Reader:
    def __init__(self, body: bytes) -> None:
        self._body = body
        self._at = 0

    def take(self, size: int, what: str) -> bytes:
        if self._at + size > len(self._body):
            raise ValueError(f"truncated {what}")
        chunk = self._body[self._at : self._at + size]
        self._at += size
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def account(self) -> str:
        size = self.u8("conversation length")
        if not 1 <= size <= ACCOUNT_MAX:
            raise ValueError(f"conversation account is 1..{ACCOUNT_MAX} bytes, got {size}")
        raw = self.take(size, "conversation")
        if not all(0x21 <= b <= 0x7E for b in raw):
            raise ValueError("conversation account is not printable ASCII")
        return raw.decode("ascii")

    def rest(self) -> bytes:
        chunk, self._at = self._body[self._at :], len(self._body)
        return chunk

    def end(self) -> None:
        if self._at != len(self._body):
            raise ValueError(f"{len(self._body) - self._at} trailing bytes")


def decode(content_type: str, body: bytes) -> Control:
    """The control a payload carries; ValueError (a sentence) for anything malformed."""
    reader = _Reader(body)
    if reader.u8("format") != FORMAT:
        raise ValueError(f"unknown format (this SDK reads format {FORMAT})")
    control: Control
    if content_type == RECEIPT_CONTENT_TYPE:
        kind = reader.u8("receipt kind")
        if kind not in (DELIVERED, READ):
            raise ValueError(f"unknown receipt kind {kind}")
        count = reader.u8("id count")
        if not 1 <= count <= RECEIPT_IDS_MAX:
            raise ValueError(f"a receipt names 1..{RECEIPT_IDS_MAX} ids, got {count}")
        ids = tuple(reader.take(ID_SIZE, "message id") for _ in range(count))
        control = Receipt(kind, ids)
    elif content_type == TIMER_CONTENT_TYPE:
        conversation = reader.account()
        seconds = int.from_bytes(reader.take(4, "seconds"), "big")
        if seconds > TIMER_MAX_S:
            raise ValueError(f"timer of {seconds} s exceeds {TIMER_MAX_S} s")
        control = Timer(conversation, seconds, int.from_bytes(reader.take(8, "set_at_ms"), "big"))
    elif content_type == EDIT_CONTENT_TYPE:
        conversation = reader.account()
        target = reader.take(ID_SIZE, "target id")
        body_ = reader.rest()
        if len(body_) > MAX_EDIT_BODY:
            raise ValueError(f"edited body of {len(body_)} bytes exceeds {MAX_EDIT_BODY}")
        control = Edit(conversation, target, body_)
    elif content_type == DELETE_CONTENT_TYPE:
        control = Delete(reader.account(), reader.take(ID_SIZE, "target id"))
    else:
        raise ValueError(f"unknown control content type {content_type!r}")
    reader.end()
    return control
