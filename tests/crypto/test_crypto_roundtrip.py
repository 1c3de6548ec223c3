"""Long conversations: random interleaving, loss and reordering within the skip bound."""

from __future__ import annotations

import random

import pytest

from xchat.client.crypto import (
    MAX_SKIP,
    MAX_SKIPPED_KEYS,
    Payload,
    ReplayedMessageError,
    Session,
    TooManySkippedMessagesError,
)


def _p(i: int) -> Payload:
    return Payload(
        message_id=i.to_bytes(16, "big"),
        counter=i,
        sent_at_ms=1_700_000_000_000 + i,
        content_type="text/plain",
        body=b"m%d" % i,
    )


def test_ten_thousand_messages_random_interleaving_drops_reordering(conversation) -> None:
    rng = random.Random(20240611)
    sessions = {"a": conversation.a, "b": conversation.b}
    peer = {"a": "b", "b": "a"}
    # In-flight messages per direction; delivery picks from a window (reordering)
    # and sometimes drops, keeping every gap far below MAX_SKIP.
    in_flight: dict[str, list[tuple[bytes, Payload]]] = {"a": [], "b": []}
    delivered = dropped = 0
    sender = "a"
    for i in range(10_000):
        if rng.random() < 0.15:
            sender = peer[sender]  # bursts in one direction, then switch
        p = _p(i)
        in_flight[sender].append((sessions[sender].encrypt(p), p))
        for direction in ("a", "b"):
            queue = in_flight[direction]
            while queue and (len(queue) > 20 or rng.random() < 0.5):
                wire, expected = queue.pop(rng.randrange(min(len(queue), 8)))
                if rng.random() < 0.05:
                    dropped += 1
                    continue
                assert sessions[peer[direction]].decrypt(wire) == expected
                delivered += 1
    for direction in ("a", "b"):
        rng.shuffle(in_flight[direction])
        for wire, expected in in_flight[direction]:
            assert sessions[peer[direction]].decrypt(wire) == expected
            delivered += 1
    assert delivered + dropped == 10_000 and 300 < dropped < 700


def test_message_from_old_chain_delivered_after_ratchet_steps(conversation) -> None:
    a, b = conversation.a, conversation.b
    late = a.encrypt(_p(1))
    for i in range(3):  # three full DH ratchet round trips
        b.decrypt(a.encrypt(_p(10 + i)))
        a.decrypt(b.encrypt(_p(20 + i)))
    assert b.decrypt(late) == _p(1)


def test_skip_beyond_bound_is_refused_and_state_kept(conversation) -> None:
    a, b = conversation.a, conversation.b
    wires = [a.encrypt(_p(i)) for i in range(MAX_SKIP + 2)]
    before = b.to_bytes()
    with pytest.raises(TooManySkippedMessagesError) as info:
        b.decrypt(wires[-1])
    assert info.value.limit == MAX_SKIP
    assert b.to_bytes() == before
    assert b.decrypt(wires[MAX_SKIP]) == _p(MAX_SKIP)  # exactly MAX_SKIP skipped: allowed
    assert b.decrypt(wires[0]) == _p(0)


def test_total_skipped_keys_are_capped_oldest_first(conversation) -> None:
    a, b = conversation.a, conversation.b
    first_chain_oldest = None
    chains = MAX_SKIPPED_KEYS // MAX_SKIP + 1
    for c in range(chains):
        wires = [a.encrypt(_p(i)) for i in range(MAX_SKIP + 1)]
        first_chain_oldest = first_chain_oldest or wires[0]
        b.decrypt(wires[-1])  # skips MAX_SKIP keys of this chain
        a.decrypt(b.encrypt(_p(c)))  # round trip: next chain
    assert len(b._state.skipped) == MAX_SKIPPED_KEYS
    restored = Session.from_bytes(b.to_bytes())
    assert len(restored._state.skipped) == MAX_SKIPPED_KEYS
    with pytest.raises(ReplayedMessageError):
        b.decrypt(first_chain_oldest)
