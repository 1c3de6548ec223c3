"""The conversation ledger and the control wire forms, in memory (issue 14; no network)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from xchat.client import ConversationSettings, RequestRejected
from xchat.client._controls import (
    DELETE_CONTENT_TYPE,
    DELIVERED,
    EDIT_CONTENT_TYPE,
    RECEIPT_CONTENT_TYPE,
    TIMER_CONTENT_TYPE,
    TIMER_MAX_S,
    Delete,
    Edit,
    Receipt,
    Timer,
    decode,
    encode_delete,
    encode_edit,
    encode_receipt,
    encode_timer,
)
from xchat.client._conversation import LEDGER_MAX, Ledger
from xchat.client._conversation_tasks import Conversations
from xchat.client._state import InboxItem, LocalState
from xchat.client.crypto import Payload


def _ledger(tmp_path: Path) -> tuple[LocalState, Ledger, list[object]]:
    state = LocalState(tmp_path / "s.db")
    events: list[object] = []
    return state, Ledger(state, me=lambda: "me", on_event=events.append), events


def _receive(state: LocalState, ledger: Ledger, count: int, sender: str = "peer") -> list[bytes]:
    ids = []
    with state.transaction():
        for _ in range(count):
            payload = Payload.new(b"x", counter=1)
            ledger.stored(InboxItem(payload.message_id, sender, "dev", b""), payload)
            ids.append(payload.message_id)
    return ids


def test_wire_forms_round_trip() -> None:
    mid = bytes(range(16))
    assert decode(RECEIPT_CONTENT_TYPE, encode_receipt(DELIVERED, [mid, mid])) == Receipt(DELIVERED, (mid, mid))
    assert decode(TIMER_CONTENT_TYPE, encode_timer("bob", 60, 123)) == Timer("bob", 60, 123)
    assert decode(EDIT_CONTENT_TYPE, encode_edit("bob", mid, b"new")) == Edit("bob", mid, b"new")
    assert decode(DELETE_CONTENT_TYPE, encode_delete("bob", mid)) == Delete("bob", mid)
    with pytest.raises(ValueError):
        encode_timer("bob", TIMER_MAX_S + 1, 0)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (RECEIPT_CONTENT_TYPE, encode_receipt(DELIVERED, [bytes(16)]) + b"\x00"),  # trailing byte
        (RECEIPT_CONTENT_TYPE, b"\x01\x01\x81" + bytes(16 * 129)),  # too many ids
        (TIMER_CONTENT_TYPE, b"\x01\x03b b" + bytes(12)),  # not printable
        (TIMER_CONTENT_TYPE, b"\x01\x03bob" + (TIMER_MAX_S + 1).to_bytes(4, "big") + bytes(8)),
        (DELETE_CONTENT_TYPE, b"\x01\x00"),
        (EDIT_CONTENT_TYPE, b"\x01\x03bob" + bytes(15)),
        ("application/x-xchat-unknown", b"\x01"),
    ],
)
def test_malformed_bodies_raise_a_sentence(content_type: str, body: bytes) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        decode(content_type, body)


def test_the_ledger_stays_bounded_and_cheap(tmp_path: Path) -> None:
    state, ledger, _ = _ledger(tmp_path)
    _receive(state, ledger, LEDGER_MAX)
    started = time.process_time()
    _receive(state, ledger, 512)
    per_message = (time.process_time() - started) / 512
    rows = state.db.execute("SELECT count(*) FROM conversation_messages").fetchone()[0]
    assert rows == LEDGER_MAX
    # Without the sent_at_ms index the age prune scanned the table: 0.8-1.6 ms per message here; ~40 us with it.
    assert per_message < 0.0005, f"{per_message * 1e6:.0f} us per received message"
    state.close()


def test_rows_due_to_disappear_outlive_the_bound_until_they_did(tmp_path: Path) -> None:
    state, ledger, events = _ledger(tmp_path)
    with state.transaction():
        ledger.put_settings("peer", ConversationSettings(disappearing_s=3600))
    due = _receive(state, ledger, 10)
    with state.transaction():
        ledger.put_settings("peer", ConversationSettings())
    _receive(state, ledger, LEDGER_MAX + 10)
    assert all(ledger.expires_at(m) is not None for m in due)
    with state.transaction():
        assert ledger.expire_due(int(time.time() * 1000) + 3_600_001) == 10
    assert len(events) == 10 and all(ledger.gone(m) for m in due)
    state.close()


def test_the_latest_timer_setting_wins_whatever_the_order(tmp_path: Path) -> None:
    state, ledger, _ = _ledger(tmp_path)
    with state.transaction():
        assert ledger.apply_timer("peer", 60, 1000, "peer")
        assert not ledger.apply_timer("peer", 5, 999, "me")  # older
        assert ledger.apply_timer("peer", 30, 1000, "zed")  # same time: the greater name
        assert not ledger.apply_timer("peer", 30, 1000, "zed")  # the same setting again
    assert ledger.settings("peer").disappearing_s == 30
    state.close()


async def test_an_unreachable_sender_never_holds_up_the_others_receipts(tmp_path: Path) -> None:
    """Delivered receipts go out in batches, in order: one account that cannot be written to (deleted,
    untrusted list) has its receipts dropped instead of retried for ever in front of everyone else's."""
    state, ledger, _ = _ledger(tmp_path)
    sent: list[tuple[str, bytes]] = []

    async def send_control(account: str, content_type: str, body: bytes) -> None:
        if account == "gone":
            raise RequestRejected("NOT_FOUND", "no such account")
        sent.append((account, body))

    conversations = Conversations(ledger, me=lambda: "me", send_control=send_control)
    gone = _receive(state, ledger, 3, sender="gone")
    ok = _receive(state, ledger, 2, sender="ok")
    try:
        deadline = time.monotonic() + 10
        while not sent:
            assert time.monotonic() < deadline, "the reachable account's receipts never left"
            await asyncio.sleep(0.05)
        assert sent == [("ok", encode_receipt(DELIVERED, ok))]
        while ledger.receipts_due():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert gone  # dropped, not sent
    finally:
        await conversations.close()
        state.close()
