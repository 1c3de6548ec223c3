"""Which applies undid a change made by someone else (drift), to be reported.

Two paths correct drift: the child-event handlers (at once, for the one object
an event names) and the resync timer (every period, for all of them). Both run
under the mesh's lock, so exactly one of them makes a given correction; that
one reports it. The report must not depend on which path won the race.

An apply is a correction when what it writes is what this operator process
wrote last time (the desired object's digest is unchanged) and yet the server
had to change the object (server-side apply leaves ``resourceVersion`` alone
when nothing changes) or create it again (no object before, or a new uid). A
change of the desired objects themselves (a spec edit, a region published) is
never called drift.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, MutableMapping
from typing import Any

Key = tuple[str, str]  # (kind, name) within the mesh's namespace

RECREATED = "Recreated"
CORRECTED = "Corrected"


def digest(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclasses.dataclass
class Ledger:
    """What this process last applied per object of one mesh (digest of the desired object)."""

    applied: MutableMapping[Key, str] = dataclasses.field(default_factory=dict)

    def classify(self, key: Key, desired: Mapping[str, Any], before: Mapping[str, Any] | None,
                 after: Mapping[str, Any]) -> str | None:
        """RECREATED, CORRECTED or None for one apply, and remember what was applied."""
        text = digest(desired)
        previous = self.applied.get(key)
        self.applied[key] = text
        if previous is None or previous != text:
            return None  # first apply here, or a desired change: not drift
        # ``before`` may have been read before a deletion (the timer lists the objects once,
        # then applies): a new uid means the apply created it again.
        if before is None or _meta(before, "uid") != _meta(after, "uid"):
            return RECREATED
        if _meta(before, "resourceVersion") != _meta(after, "resourceVersion"):
            return CORRECTED
        return None


def _meta(obj: Mapping[str, Any], field: str) -> str:
    return str((obj.get("metadata") or {}).get(field, ""))


def describe(key: Key) -> str:
    return f"{key[0]}/{key[1]}"
