"""Missing predecessors (issue 10): what a committed message says about its session's order."""

from __future__ import annotations

from xchat.client.crypto.ratchet import Gaps, ratchet_decrypt
from xchat.client.crypto.sessions import Session
from xchat.client.crypto.wire import parse_wire

from .conftest import payload

T0 = 1_800_000_000_000
WINDOW = 10_000


def _open(b: Session, wire: bytes, now_ms: int, window: int = WINDOW) -> Gaps | None:
    message = parse_wire(wire)
    _plaintext, commit = ratchet_decrypt(
        b._state, message.header, message.ciphertext, aad=b.associated_data + message.authenticated,
        now_ms=now_ms, gap_window_ms=window,
    )
    return commit()


def test_in_order_messages_report_nothing(conversation) -> None:
    a, b = conversation.a, conversation.b
    for i in range(3):
        assert _open(b, a.encrypt(payload()), T0 + i) is None


def test_reversed_messages_name_their_missing_predecessors(conversation) -> None:
    a, b = conversation.a, conversation.b
    w1, w2, w3 = (a.encrypt(payload()) for _ in range(3))
    s1, s2, s3 = (parse_wire(w).header for w in (w1, w2, w3))
    third = _open(b, w3, T0)
    assert third is not None and not third.filled
    assert third.missing == ((s1.dh, s1.n), (s2.dh, s2.n)) and third.newest_ms == T0
    second = _open(b, w2, T0 + 1)
    assert second == Gaps((s2.dh, s2.n), True, ((s1.dh, s1.n),), T0)
    first = _open(b, w1, T0 + 2)
    assert first == Gaps((s1.dh, s1.n), True, (), 0)
    assert _open(b, a.encrypt(payload()), T0 + 3) is None


def test_a_new_chain_counts_the_previous_chains_gaps(conversation) -> None:
    a, b = conversation.a, conversation.b
    lost = a.encrypt(payload())
    late = parse_wire(lost).header
    a.encrypt(payload())
    assert _open(b, a.encrypt(payload()), T0) is not None  # skips the two before it
    a.decrypt(b.encrypt(payload()))  # a steps its DH ratchet: its next message opens a new chain
    opened = _open(b, a.encrypt(payload()), T0 + 1)
    assert opened is not None and not opened.filled and len(opened.missing) == 2
    assert opened.missing[0] == (late.dh, late.n)
    assert _open(b, lost, T0 + 2) == Gaps((late.dh, late.n), True, (), 0)


def test_predecessors_skipped_longer_ago_than_the_window_are_given_up(conversation) -> None:
    a, b = conversation.a, conversation.b
    a.encrypt(payload())  # never arrives
    assert _open(b, a.encrypt(payload()), T0) is not None
    assert _open(b, a.encrypt(payload()), T0 + WINDOW) is not None  # still within the window
    assert _open(b, a.encrypt(payload()), T0 + WINDOW + 1) is None  # waited for once: given up


def test_no_window_reports_nothing(conversation) -> None:
    a, b = conversation.a, conversation.b
    w1 = a.encrypt(payload())
    assert _open(b, a.encrypt(payload()), T0, window=0) is None
    assert _open(b, w1, T0, window=0) is None
