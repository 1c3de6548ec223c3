"""The checker over hand-made histories: every category of Jepsen's queue taxonomy, RTO and stalls."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from xchat_chaos.checker import check, percentile
from xchat_chaos.history import Event, Fault, History


def send(h: History, s: str, r: str, n: int, t: float, *, ack: float | None = None) -> None:
    h.events.append(Event("attempt", t, s, r, n))
    if ack is not None:
        h.events.append(Event("ack", ack, s, r, n))


def deliver(h: History, s: str, r: str, n: int, t: float) -> None:
    h.events.append(Event("deliver", t, s, r, n, r))


def clean(n: int = 5) -> History:
    h = History(users={"alice": "a", "bob": "b"}, duration=100.0)
    for i in range(1, n + 1):
        send(h, "alice", "bob", i, i, ack=i + 0.1)
        deliver(h, "alice", "bob", i, i + 0.2)
    return h


def test_clean_history_passes() -> None:
    v = check(clean())
    assert (v.attempted, v.acked, v.delivered) == (5, 5, 5)
    assert v.rpo == 0 and not v.duplicated and not v.out_of_order and not v.unexpected
    assert v.failures(rto_bound=30) == []
    assert v.latency["before"]["p50"] == pytest.approx(0.2)


def test_lost_split_into_prefix_middle_postfix() -> None:
    h = History(users={"alice": "a", "bob": "b"}, duration=100.0)
    for i in range(1, 8):
        send(h, "alice", "bob", i, i, ack=i + 0.1)
    for i in (3, 5):
        deliver(h, "alice", "bob", i, i + 0.2)
    v = check(h)
    positions = {lost.key: lost.position for lost in v.lost}
    assert positions == {
        "alice>bob#1": "prefix",
        "alice>bob#2": "prefix",
        "alice>bob#4": "middle",
        "alice>bob#6": "postfix",
        "alice>bob#7": "postfix",
    }
    assert v.rpo == 5
    assert any("lost" in f for f in v.failures(rto_bound=30))


def test_conversation_with_no_delivery_is_all_postfix() -> None:
    h = History(users={"alice": "a", "bob": "b"}, duration=10.0)
    send(h, "alice", "bob", 1, 1, ack=1.1)
    assert [lost.position for lost in check(h).lost] == ["postfix"]


def test_unknown_and_recovered_are_not_failures() -> None:
    h = clean(2)
    send(h, "alice", "bob", 3, 3)  # never acked, never delivered
    send(h, "alice", "bob", 4, 4)  # never acked, delivered anyway
    deliver(h, "alice", "bob", 4, 4.5)
    v = check(h)
    assert v.unknown == ["alice>bob#3"] and v.recovered == ["alice>bob#4"]
    assert v.failures(rto_bound=30) == []


def test_unexpected_delivery() -> None:
    h = clean(1)
    deliver(h, "mallory", "bob", 1, 2)
    v = check(h)
    assert v.unexpected == ["mallory>bob#1"]
    assert v.delivered == 1
    assert any("unexpected" in f for f in v.failures(rto_bound=30))


def test_duplicate_to_the_app() -> None:
    h = clean(2)
    deliver(h, "alice", "bob", 2, 5)
    v = check(h)
    assert v.duplicated == {"alice>bob#2": 2}
    # The duplicate also goes backwards in the conversation.
    assert len(v.out_of_order) == 1
    assert any("more than once" in f for f in v.failures(rto_bound=30))


def test_out_of_order_within_a_conversation_only() -> None:
    h = History(users={"alice": "a", "bob": "b", "carol": "c"}, duration=100.0)
    send(h, "alice", "bob", 1, 1, ack=1.1)
    send(h, "alice", "bob", 2, 2, ack=2.1)
    send(h, "carol", "bob", 1, 1.5, ack=1.6)
    deliver(h, "alice", "bob", 2, 3)
    deliver(h, "carol", "bob", 1, 3.1)  # another conversation: no constraint
    deliver(h, "alice", "bob", 1, 3.2)
    v = check(h)
    assert [(r.conversation, r.seq, r.after) for r in v.out_of_order] == [("alice>bob", 1, 2)]


def test_grace_excludes_acks_at_the_very_end() -> None:
    h = clean(2)
    send(h, "alice", "bob", 3, 99.5, ack=99.9)
    assert check(h).rpo == 1
    assert check(h, grace=1.0).rpo == 0


def test_rto_for_survivors_and_failed_over_users() -> None:
    h = History(users={"alice": "a", "bob": "b", "carol": "c"}, duration=60.0)
    h.faults.append(Fault("region-kill", 10.0, 20.0, "c"))
    # alice (survivor) -> bob: resumes 2 s after the fault.
    send(h, "alice", "bob", 1, 5, ack=5.1)
    deliver(h, "alice", "bob", 1, 5.2)
    send(h, "alice", "bob", 2, 11, ack=12)
    deliver(h, "alice", "bob", 2, 12.5)
    # bob -> carol (homed in the dead region): delivered after failover at 18.
    send(h, "bob", "carol", 1, 10.5, ack=10.6)
    deliver(h, "bob", "carol", 1, 18)
    # carol (failed over) -> alice: acked at 16.
    send(h, "carol", "alice", 1, 10.2, ack=16)
    deliver(h, "carol", "alice", 1, 16.2)
    v = check(h)
    (w,) = v.rto
    assert w.send_survivors == pytest.approx(2.0)  # bob's first ack is 0.6 but alice's is 2.0: worst
    assert w.send_failed_over == pytest.approx(6.0)
    assert w.deliver_failed_over == pytest.approx(8.0)
    assert w.deliver_survivors == pytest.approx(6.2)
    assert v.max_rto == pytest.approx(8.0)
    assert v.failures(rto_bound=30) == []
    assert any("RTO 8.0s" in f for f in v.failures(rto_bound=5))


def test_the_backlog_device_does_not_set_the_delivery_rto() -> None:
    """A device kept offline to build a backlog works through it, in order, at its app's pace:
    its first message sent after the fault comes after the backlog. Its sends still count."""
    h = History(users={"alice": "a", "bob": "b", "carol": "a"}, duration=60.0)
    h.faults.append(Fault("region-partition", 10.0, 18.0, "a"))
    h.offline["carol"] = [[0.0, 9.5]]
    send(h, "alice", "bob", 1, 10.5, ack=11.0)
    deliver(h, "alice", "bob", 1, 11.1)
    send(h, "bob", "alice", 1, 10.5, ack=10.6)
    deliver(h, "bob", "alice", 1, 11.5)
    send(h, "bob", "carol", 1, 10.5, ack=10.6)
    deliver(h, "bob", "carol", 1, 16.0)  # behind its backlog
    send(h, "carol", "bob", 1, 10.5, ack=13.0)
    deliver(h, "carol", "bob", 1, 13.1)
    (w,) = check(h).rto
    assert w.deliver_failed_over == pytest.approx(1.5)
    assert w.send_failed_over == pytest.approx(3.0)  # carol's send counts (the worst)


def test_rto_unresolved_when_a_user_never_resumes() -> None:
    h = History(users={"alice": "a", "bob": "b"}, duration=60.0)
    h.faults.append(Fault("region-freeze", 10.0, 20.0, "b"))
    send(h, "alice", "bob", 1, 5, ack=5.1)
    deliver(h, "alice", "bob", 1, 5.2)
    send(h, "alice", "bob", 2, 11, ack=11.2)  # acked, never delivered: lost and bob never resumed
    v = check(h)
    fails = v.failures(rto_bound=30)
    assert any("deliver never resumed for bob" in f for f in fails)
    assert any("never resumed for alice" in f for f in fails) is False


def test_silent_stall_is_a_failure_even_without_loss() -> None:
    """nats.py #504 shape: the receiver stays connected but nothing arrives for a long time."""
    h = History(users={"alice": "a", "bob": "b"}, duration=100.0)
    for i in range(1, 6):
        send(h, "alice", "bob", i, i, ack=i + 0.1)
    deliver(h, "alice", "bob", 1, 1.2)
    for i in range(2, 6):
        deliver(h, "alice", "bob", i, 50 + i)  # all arrive eventually, 50 s late
    v = check(h)
    assert v.rpo == 0
    stall, since = v.stalls["bob"]
    assert since == pytest.approx(2.1) and stall == pytest.approx(49.9)
    assert any("stalled" in f for f in v.failures(rto_bound=30))


def test_time_offline_on_purpose_is_not_a_stall_nor_latency() -> None:
    h = History(users={"alice": "a", "bob": "b"}, duration=100.0)
    h.offline["bob"] = [[0.0, 40.0]]
    send(h, "alice", "bob", 1, 1, ack=1.1)
    deliver(h, "alice", "bob", 1, 40.5)
    v = check(h)
    assert v.stalls["bob"][0] == pytest.approx(0.5)
    assert v.latency["before"]["count"] == 0


def test_stall_until_the_end_counts() -> None:
    h = History(users={"alice": "a", "bob": "b"}, duration=100.0)
    send(h, "alice", "bob", 1, 10, ack=10.5)
    v = check(h)
    assert v.stalls["bob"][0] == pytest.approx(89.5)


def test_a_message_delivered_before_its_ack_is_never_pending() -> None:
    """Under load the recipient often has a message before its sender's ack returns. Such a
    message never makes its receiver wait: it must not count as pending until the end of
    the run (the partition drill under load reported every receiver stalled 36 s after
    its last message while a slow device drained)."""
    h = History(users={"alice": "a", "bob": "b"}, duration=100.0)
    for i in range(1, 6):
        send(h, "alice", "bob", i, i, ack=i + 0.3)
        deliver(h, "alice", "bob", i, i + 0.2)
    v = check(h)
    assert v.stalls["bob"][0] < 1.0, v.stalls
    assert not any("stalled" in f for f in v.failures(rto_bound=30))


def test_latency_phases_and_timeline() -> None:
    h = History(users={"alice": "a", "bob": "b"}, duration=30.0)
    h.faults.append(Fault("latency", 10.0, 20.0, None))
    send(h, "alice", "bob", 1, 5, ack=5.1)
    deliver(h, "alice", "bob", 1, 5.1)
    send(h, "alice", "bob", 2, 15, ack=15.5)
    deliver(h, "alice", "bob", 2, 16.0)
    send(h, "alice", "bob", 3, 25, ack=25.1)
    deliver(h, "alice", "bob", 3, 25.3)
    v = check(h)
    assert v.latency["before"]["p50"] == pytest.approx(0.1)
    assert v.latency["during"]["p99"] == pytest.approx(1.0)
    assert v.latency["after"]["max"] == pytest.approx(0.3)
    assert len(v.timeline) == 31
    assert v.timeline[16]["deliveries"] == 1 and v.timeline[15]["acks"] == 1
    (w,) = v.rto
    assert w.send_failed_over is None and w.deliver_failed_over is None  # no region hit


def test_percentile_nearest_rank() -> None:
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 99) == 99
    assert math.isnan(percentile([], 50))


def test_history_round_trips_through_json_lines(tmp_path: Path) -> None:
    h = clean(3)
    h.faults.append(Fault("region-kill", 1.0, 2.0, "a"))
    h.offline["bob"] = [[0.5, 0.7]]
    h.dump(tmp_path / "h.jsonl")
    again = History.load(tmp_path / "h.jsonl")
    assert again.events == h.events and again.faults == h.faults and again.users == h.users
    assert again.offline == h.offline
    assert check(again).delivered == 3
