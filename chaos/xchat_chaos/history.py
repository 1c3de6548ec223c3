"""What a drill records: client-side events and fault windows, nothing from servers.

The workload appends one ``Event`` per observation made by a client: a send
attempted, a send acknowledged (the SDK returned a receipt), a send that
failed for good, a message handed to the app. Fault windows are recorded by
the drill runner. ``History`` is the only input of the checker, and it
round-trips through JSON lines, so a drill can be re-checked offline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["attempt", "ack", "fail", "deliver"]


def op_key(sender: str, recipient: str, seq: int) -> str:
    """Identity of one message of the workload: its conversation and sequence number."""
    return f"{sender}>{recipient}#{seq}"


@dataclass(frozen=True, slots=True)
class Event:
    """One client-side observation. ``t`` is seconds since the drill's epoch.

    ``sender``/``recipient``/``seq`` come from the workload for attempt, ack
    and fail, and from the decrypted body for deliver (which the checker
    therefore trusts only as far as the receiver's log).
    """

    kind: Kind
    t: float
    sender: str
    recipient: str
    seq: int
    # deliver only: the user whose app saw it (normally == recipient).
    observer: str = ""

    @property
    def key(self) -> str:
        return op_key(self.sender, self.recipient, self.seq)


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault window: from injection (``start``) to the moment it was undone (``end``)."""

    name: str
    start: float
    end: float
    # The region hit; None for faults on every link (latency) or the whole mesh.
    region: str | None = None


@dataclass(slots=True)
class History:
    users: dict[str, str] = field(default_factory=dict)  # user -> home region
    events: list[Event] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    duration: float = 0.0
    # user -> [start, end] windows when its receiver was deliberately offline
    # (not a stall: the drill keeps a device away to build a backlog).
    offline: dict[str, list[list[float]]] = field(default_factory=dict)
    # Sends whose send() call raised, by the SDK's error code (the drill then resends from
    # the outbox): an app sees each of these, so a spurious one is a defect of its own.
    send_errors: dict[str, int] = field(default_factory=dict)

    def dump(self, path: Path) -> None:
        with path.open("w") as out:
            head = {"users": self.users, "duration": self.duration, "offline": self.offline, "send_errors": self.send_errors}
            out.write(json.dumps(head) + "\n")
            for fault in self.faults:
                out.write(json.dumps({"fault": asdict(fault)}) + "\n")
            for event in self.events:
                out.write(json.dumps(asdict(event)) + "\n")

    @classmethod
    def load(cls, path: Path) -> History:
        lines = path.read_text().splitlines()
        head = json.loads(lines[0])
        history = cls(
            users=head["users"], duration=head["duration"], offline=head.get("offline", {}),
            send_errors=head.get("send_errors", {}),
        )
        for line in lines[1:]:
            row = json.loads(line)
            if "fault" in row:
                history.faults.append(Fault(**row["fault"]))
            else:
                history.events.append(Event(**row))
        return history
