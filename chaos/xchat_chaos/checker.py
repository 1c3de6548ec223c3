"""The independent checker: a pure function from a drill's ``History`` to a verdict.

It knows nothing of servers: only what senders were told (acks) and what
receivers' apps saw (deliveries), in the taxonomy of Jepsen's queue checker:

- attempted: sends started; acked: the SDK returned a receipt;
- delivered: distinct attempted messages some app saw;
- lost: acked, never delivered (RPO) — split by position in its conversation
  into *prefix* (before the first delivered message), *middle* and *postfix*
  (after the last delivered one; usually "still in flight at the end");
- unknown: not acked, never delivered (indeterminate, allowed);
- recovered: not acked, delivered anyway (allowed: the ack was lost);
- unexpected: delivered, never attempted (forged or corrupted);
- duplicated: seen by an app more than once (the SDK promises once);
- out of order: a conversation's sequence number did not increase.

On top, per fault window: RTO (fault start → first ack / first delivery of
a message sent after the fault started) for users homed elsewhere
("survivors") and users homed in the faulted region ("failed over"; the
deliveries of a device kept offline to build a backlog do not count); and
stalls: the longest time a receiver had acked-but-undelivered messages and
no delivery at all (a silently stalled subscription shows up here).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from xchat_chaos.history import Event, Fault, History, op_key

# A message acked this close to the end of the run may still be in flight.
DEFAULT_GRACE_S = 0.0


@dataclass(frozen=True, slots=True)
class Lost:
    key: str
    ack_t: float
    position: str  # prefix | middle | postfix


@dataclass(frozen=True, slots=True)
class Reorder:
    conversation: str
    seq: int
    after: int
    t: float


@dataclass(frozen=True, slots=True)
class WindowRto:
    fault: str
    start: float
    region: str | None
    # Seconds from fault start; None when nothing resumed before the run ended.
    send_survivors: float | None
    send_failed_over: float | None
    deliver_survivors: float | None
    deliver_failed_over: float | None

    @property
    def worst(self) -> float | None:
        values = [v for v in (self.send_survivors, self.send_failed_over, self.deliver_survivors, self.deliver_failed_over) if v is not None]
        return max(values) if values else None


@dataclass(slots=True)
class Verdict:
    attempted: int = 0
    acked: int = 0
    delivered: int = 0
    lost: list[Lost] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)
    out_of_order: list[Reorder] = field(default_factory=list)
    rto: list[WindowRto] = field(default_factory=list)
    # receiver -> (longest stall in s, when it began)
    stalls: dict[str, tuple[float, float]] = field(default_factory=dict)
    # phase -> {count, p50, p99, max} of end-to-end latency (attempt -> delivery), by delivery time
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    # per whole second since the epoch: acks, deliveries, p50, p99 latency of deliveries in it
    timeline: list[dict[str, float]] = field(default_factory=list)
    throughput: dict[str, float] = field(default_factory=dict)
    unresolved_rto: list[str] = field(default_factory=list)

    @property
    def rpo(self) -> int:
        """Acknowledged messages never delivered (excluding those still possibly in flight)."""
        return len(self.lost)

    @property
    def max_rto(self) -> float | None:
        values = [w.worst for w in self.rto if w.worst is not None]
        return max(values) if values else None

    @property
    def max_stall(self) -> float:
        return max((s for s, _ in self.stalls.values()), default=0.0)

    def failures(self, *, rto_bound: float) -> list[str]:
        """Every violated guarantee, in words; empty when the drill passed."""
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} acknowledged message(s) lost (RPO > 0): {[l.key for l in self.lost[:5]]}")
        if self.duplicated:
            out.append(f"{len(self.duplicated)} message(s) reached an app more than once: {list(self.duplicated)[:5]}")
        if self.out_of_order:
            out.append(f"{len(self.out_of_order)} order violation(s): {self.out_of_order[:3]}")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} unexpected message(s) delivered: {self.unexpected[:5]}")
        for window in self.rto:
            if window.worst is not None and window.worst > rto_bound:
                out.append(f"RTO {window.worst:.1f}s > bound {rto_bound:.0f}s for fault {window.fault} at t={window.start:.1f}")
        out.extend(self.unresolved_rto)
        for user, (stall, since) in sorted(self.stalls.items()):
            if stall > rto_bound:
                out.append(f"receiver {user} stalled {stall:.1f}s from t={since:.1f} with acked messages pending")
        return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _phase(t: float, faults: list[Fault]) -> str:
    if not faults or t < min(f.start for f in faults):
        return "before"
    if any(f.start <= t < f.end for f in faults):
        return "during"
    return "after"


def check(history: History, *, grace: float = DEFAULT_GRACE_S) -> Verdict:
    """Classifies every message of ``history``; ``grace``: acks this close to the end are not counted lost."""
    v = Verdict()
    attempts: dict[str, Event] = {}
    acks: dict[str, Event] = {}
    deliveries: dict[str, list[Event]] = defaultdict(list)
    for e in history.events:
        if e.kind == "attempt":
            attempts.setdefault(e.key, e)
        elif e.kind == "ack":
            acks.setdefault(e.key, e)
        elif e.kind == "deliver":
            deliveries[e.key].append(e)

    v.attempted = len(attempts)
    v.acked = len(acks)
    v.delivered = sum(1 for k in deliveries if k in attempts)
    v.unexpected = sorted(k for k in deliveries if k not in attempts)
    v.duplicated = {k: len(d) for k, d in deliveries.items() if len(d) > 1}

    # Per conversation: delivered sequence range, order.
    by_conversation: dict[str, list[Event]] = defaultdict(list)
    for key, ds in deliveries.items():
        for d in ds:
            by_conversation[f"{d.sender}>{d.recipient}"].append(d)
    delivered_range: dict[str, tuple[int, int]] = {}
    for conv, ds in by_conversation.items():
        ds.sort(key=lambda d: d.t)  # the receiver's log order
        highest = None
        for d in ds:
            if highest is not None and d.seq <= highest:
                v.out_of_order.append(Reorder(conv, d.seq, highest, d.t))
            highest = d.seq if highest is None else max(highest, d.seq)
        seqs = [d.seq for d in ds]
        delivered_range[conv] = (min(seqs), max(seqs))

    for key, a in attempts.items():
        delivered = key in deliveries
        if key in acks and not delivered:
            ack = acks[key]
            if ack.t > history.duration - grace:
                continue
            lo_hi = delivered_range.get(f"{a.sender}>{a.recipient}")
            if lo_hi is None or a.seq > lo_hi[1]:
                position = "postfix"
            elif a.seq < lo_hi[0]:
                position = "prefix"
            else:
                position = "middle"
            v.lost.append(Lost(key, ack.t, position))
        elif key not in acks and not delivered:
            v.unknown.append(key)
        elif key not in acks and delivered:
            v.recovered.append(key)
    v.lost.sort(key=lambda lost: lost.ack_t)

    _latency(v, history, attempts, deliveries)
    _rto(v, history, attempts, acks, deliveries)
    _stalls(v, history, acks, deliveries)
    return v


def _latency(v: Verdict, history: History, attempts: dict[str, Event], deliveries: dict[str, list[Event]]) -> None:
    phases: dict[str, list[float]] = defaultdict(list)
    per_second: dict[int, list[float]] = defaultdict(list)
    for key, ds in deliveries.items():
        a = attempts.get(key)
        if a is None:
            continue
        first = min(d.t for d in ds)
        if any(start < first and end > a.t for start, end in history.offline.get(a.recipient, [])):
            continue  # its receiver was kept away on purpose: waiting time, not latency
        latency = first - a.t
        # Phase by arrival: "before" is steady state, a message caught by the fault counts "during".
        phases[_phase(first, history.faults)].append(latency)
        per_second[int(first)].append(latency)
    for phase in ("before", "during", "after"):
        values = phases.get(phase, [])
        v.latency[phase] = {
            "count": float(len(values)),
            "p50": percentile(values, 50),
            "p99": percentile(values, 99),
            "max": max(values) if values else math.nan,
        }
    acks_per_second: dict[int, int] = defaultdict(int)
    for e in history.events:
        if e.kind == "ack":
            acks_per_second[int(e.t)] += 1
    end = int(history.duration) + 1
    for second in range(end):
        lat = per_second.get(second, [])
        v.timeline.append(
            {
                "t": float(second),
                "acks": float(acks_per_second.get(second, 0)),
                "deliveries": float(len(lat)),
                "p50": percentile(lat, 50),
                "p99": percentile(lat, 99),
            }
        )
    duration = max(history.duration, 1e-9)
    v.throughput = {"acks_per_s": v.acked / duration, "deliveries_per_s": v.delivered / duration}


def _rto(
    v: Verdict, history: History, attempts: dict[str, Event], acks: dict[str, Event], deliveries: dict[str, list[Event]]
) -> None:
    senders = {a.sender for a in attempts.values()}
    for fault in history.faults:
        # Who is expected to resume: every sender; every recipient of something sent after the fault began.
        recipients = {a.recipient for a in attempts.values() if a.t >= fault.start}

        def resumed(group_hit: bool, kind: str) -> float | None:
            # A device the drill kept offline to build a backlog hands its app that backlog first,
            # in order, at the app's pace: its first new message says how long the backlog is, not
            # how fast delivery resumed. Its sends still count; its stalls skip the offline time.
            active = senders if kind == "send" else recipients - set(history.offline)
            users = {
                u
                for u, r in history.users.items()
                if (fault.region is not None and r == fault.region) == group_hit and u in active
            }
            if not users:
                return None
            worst = 0.0
            for user in users:
                first: float | None = None
                if kind == "send":
                    times = [acks[k].t for k, a in attempts.items() if a.sender == user and a.t >= fault.start and k in acks]
                else:
                    times = [
                        min(d.t for d in deliveries[k])
                        for k, a in attempts.items()
                        if a.recipient == user and a.t >= fault.start and k in deliveries
                    ]
                if times:
                    first = min(times) - fault.start
                else:
                    # Nothing resumed for this user before the end of the run.
                    v.unresolved_rto.append(f"{kind} never resumed for {user} after fault {fault.name} at t={fault.start:.1f}")
                    continue
                worst = max(worst, first)
            return worst

        v.rto.append(
            WindowRto(
                fault=fault.name,
                start=fault.start,
                region=fault.region,
                send_survivors=resumed(False, "send"),
                send_failed_over=resumed(True, "send"),
                deliver_survivors=resumed(False, "deliver"),
                deliver_failed_over=resumed(True, "deliver"),
            )
        )


def _stalls(v: Verdict, history: History, acks: dict[str, Event], deliveries: dict[str, list[Event]]) -> None:
    """Longest interval per receiver with an acked, undelivered message and no delivery at all."""
    by_receiver: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for key, ack in acks.items():
        # +1: the message becomes pending at its ack; -1: it is delivered (or never).
        delivered = min(d.t for d in deliveries[key]) if key in deliveries else None
        if delivered is not None and delivered <= ack.t:
            continue  # the app had it before its sender's ack returned: never pending
        by_receiver[ack.recipient].append((ack.t, 1, key))
        if delivered is not None:
            by_receiver[ack.recipient].append((delivered, -1, key))
    for key, ds in deliveries.items():
        for d in ds:
            by_receiver[d.observer or d.recipient].append((d.t, 0, key))
    def stall_start(receiver: str, quiet: float, until: float) -> float:
        # Time a receiver spent deliberately offline is not a stall.
        for start, end in history.offline.get(receiver, []):
            if start < until and end > quiet:
                quiet = max(quiet, min(end, until))
        return quiet

    for receiver, timeline in by_receiver.items():
        timeline.sort(key=lambda x: (x[0], -x[1]))
        pending: set[str] = set()
        quiet_since: float | None = None
        longest = (0.0, 0.0)
        for t, change, key in timeline:
            if change == 1:
                if not pending:
                    quiet_since = t
                pending.add(key)
            else:
                if pending and quiet_since is not None:
                    q = stall_start(receiver, quiet_since, t)
                    if t - q > longest[0]:
                        longest = (t - q, q)
                pending.discard(key)
                quiet_since = t if pending else None
        if pending and quiet_since is not None:
            q = stall_start(receiver, quiet_since, history.duration)
            if history.duration - q > longest[0]:
                longest = (history.duration - q, q)
        v.stalls[receiver] = longest


__all__ = ["Lost", "Reorder", "Verdict", "WindowRto", "check", "op_key", "percentile"]
