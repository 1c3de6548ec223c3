"""Envelopes the SDK encrypted (ratchet advanced, outbox rows) but never delivered: tests that
store them later, out of order, or re-seal them as an attacker would."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xchat.client import Client
from xchat.client._state import OutboxItem


async def held_back(sender: Client, account: str, texts: Sequence[str]) -> list[OutboxItem]:
    """Encrypts ``texts`` to ``account`` in order (outbox envelopes) without delivering them."""
    captured: list[OutboxItem] = []
    real = sender._book.encrypt_many

    def hold_back(**kwargs: Any) -> Any:
        outcomes = real(**kwargs)
        captured.extend(item for outcome in outcomes for item in outcome)
        return [[] for _ in outcomes]

    sender._book.encrypt_many = hold_back  # type: ignore[method-assign]
    try:
        await sender.send_many([(account, text) for text in texts])
    finally:
        sender._book.encrypt_many = real  # type: ignore[method-assign]
    items = [item for item in captured if item.recipient_account == account]
    assert len(items) == len(texts)
    return items
