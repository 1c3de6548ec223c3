"""The receive path's hold list (``_reordering.Reorder``), in memory: order, bounds, given-up gaps."""

from __future__ import annotations

import logging

import pytest

from xchat.client._reordering import Reorder
from xchat.client.crypto.ratchet import Gaps
from xchat.client.messages import Message

DH = b"k" * 32
NOW = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = NOW

    def __call__(self) -> int:
        return self.ms


def _message(n: int) -> Message:
    return Message(n.to_bytes(16, "big"), "alice", "dev", n, 0, "text/plain", str(n).encode(), n)


def _newest(n: int, missing: range | tuple[int, ...]) -> tuple[str, Message, Gaps | None]:
    """Message n decrypted with the chain key, these slots missing (skipped at NOW)."""
    gaps = Gaps((DH, n), False, tuple((DH, i) for i in missing), NOW) if missing else None
    return "dev", _message(n), gaps


def _filled(n: int, missing: range | tuple[int, ...] = ()) -> tuple[str, Message, Gaps]:
    """Message n decrypted from its stored skipped key."""
    return "dev", _message(n), Gaps((DH, n), True, tuple((DH, i) for i in missing), NOW if missing else 0)


def _n(messages: list[Message]) -> list[int]:
    return [m.counter for m in messages]


def test_nothing_held_passes_straight_through() -> None:
    reorder = Reorder(window_s=10)
    assert _n(reorder.arrived([_newest(0, ()), _newest(1, ()), (None, _message(7), None)])) == [0, 1, 7]
    assert not reorder


def test_reversed_arrivals_come_out_in_order() -> None:
    reorder = Reorder(window_s=10, clock_ms=Clock())
    assert reorder.arrived([_newest(2, (0, 1))]) == []
    assert reorder.holds(_message(2).message_id)
    assert _n(reorder.arrived([_filled(1, (0,))])) == []
    assert _n(reorder.arrived([_filled(0)])) == [0, 1, 2]
    assert not reorder and reorder.released_incomplete == 0


def test_a_control_payload_that_fills_the_gap_releases_what_waited() -> None:
    reorder = Reorder(window_s=10, clock_ms=Clock())
    reorder.arrived([_newest(1, (0,))])
    assert _n(reorder.arrived([("dev", None, Gaps((DH, 0), True, (), 0))])) == [1]


def test_a_newer_message_with_nothing_missing_proves_the_held_ones_complete() -> None:
    reorder = Reorder(window_s=10, clock_ms=Clock())
    reorder.arrived([_newest(1, (0,))])  # slot 0 later evicted (never reported as consumed)
    assert _n(reorder.arrived([_newest(2, ())])) == [1, 2]


def test_the_deadline_releases_without_traffic_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    reorder = Reorder(window_s=10, clock_ms=clock)
    reorder.arrived([_newest(1, (0,)), _newest(2, (0,))])
    assert reorder.next_deadline_s() == pytest.approx(10)
    clock.ms += 9_999
    assert reorder.due() == []
    clock.ms += 1
    with caplog.at_level(logging.INFO, logger="xchat.client._reordering"):
        assert _n(reorder.due()) == [1, 2]
    assert "without 1 earlier message" in caplog.text
    assert reorder.released_incomplete == 2 and reorder.next_deadline_s() is None


def test_the_count_bound_releases_the_front() -> None:
    reorder = Reorder(window_s=10, max_held=4, clock_ms=Clock())
    out = reorder.arrived([_newest(n, (0,)) for n in range(1, 8)])
    assert _n(out) == [1, 2, 3] and len(reorder) == 4


def test_sessions_are_independent() -> None:
    reorder = Reorder(window_s=10, clock_ms=Clock())
    assert reorder.arrived([_newest(1, (0,))]) == []
    other = ("other", _message(9), None)
    assert _n(reorder.arrived([other])) == [9]


def test_a_far_skip_shares_one_missing_set_between_held_messages() -> None:
    reorder = Reorder(window_s=10, clock_ms=Clock())
    reorder.arrived([_newest(n, range(5000, 5000 + 4000)) for n in range(9000, 9200)])
    sets = {id(entry.missing) for entry in reorder._sessions["dev"].held}
    assert len(reorder) == 200 and len(sets) == 1


def test_the_total_bound_releases_the_largest_sessions_front() -> None:
    reorder = Reorder(window_s=10, max_held=4, max_held_total=5, clock_ms=Clock())
    big = [("big", _message(n), Gaps((DH, n), False, ((DH, 0),), NOW)) for n in range(1, 5)]
    small = [("small", _message(n), Gaps((b"s" * 32, n), False, ((b"s" * 32, 0),), NOW)) for n in range(11, 13)]
    out = reorder.arrived(big + small)
    assert _n(out) == [1] and len(reorder) == 5


def test_a_message_refused_after_decrypting_is_not_waited_for() -> None:
    """A forged certificate or an unlisted device: its slot is skipped by the next message, never filled."""
    clock = Clock()
    reorder = Reorder(window_s=10, clock_ms=clock)
    reorder.refused("dev", (DH, 1))
    assert _n(reorder.arrived([_newest(2, (1,))])) == [2]
    assert not reorder and reorder.released_incomplete == 0


def test_a_refusal_after_the_hold_releases_the_held_message() -> None:
    clock = Clock()
    reorder = Reorder(window_s=10, clock_ms=clock)
    assert _n(reorder.arrived([_newest(3, (1, 2))])) == []
    reorder.refused("dev", (DH, 2))
    assert _n(reorder.arrived([_filled(1)])) == [1, 3]
    assert reorder.released_incomplete == 0


def test_refusals_of_another_device_change_nothing() -> None:
    reorder = Reorder(window_s=10, clock_ms=Clock())
    reorder.refused("other", (DH, 1))
    assert _n(reorder.arrived([_newest(2, (1,))])) == []
    assert len(reorder) == 1
