"""Which NATS StatefulSets may change now: one region at a time, never a majority down.

A change to a NATS pod template (image, config hash, resources) restarts that
region's servers. Applied to every region in one pass, it takes every replica of
every stream down at once: a self-inflicted total outage. So a template change
("a roll") is applied to one region per pass, and only when every *other* region
that should run NATS is settled:

* its StatefulSet has observed its latest generation and every pod is updated
  and ready. The pods' startup probe is nats-server's full ``/healthz``, which
  passes only once the server's JetStream assets are current again, so "ready"
  here means caught up, not merely running;
* the operator's last probe of the region found NATS healthy (when probes run).

A region that is itself unready (or marked down) may always be changed: that
cannot take away more than is already gone, and it is how a bad image is fixed.
Creations, scale changes and applies that leave the template unchanged are never
held. Held rolls are reported (status condition ``RollingOut``) and retried by
the resync timer, which re-runs this plan every period.

Pure functions over plain dicts (what the API server returned): tested without kopf.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from . import names
from .probes import NOT_PROBED, RegionHealth
from .spec import MeshSpec

TEMPLATE_HASH_ANNOTATION = "xchat.dev/template-hash"
Obj = dict[str, Any]


def template_hash(statefulset: Mapping[str, Any]) -> str:
    """A stable digest of a StatefulSet's pod template (what a change to restarts pods)."""
    text = json.dumps(statefulset["spec"]["template"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamped(statefulset: Obj) -> Obj:
    """``statefulset`` with its template hash recorded in an annotation (compared on the next pass)."""
    annotations = statefulset["metadata"].setdefault("annotations", {})
    annotations[TEMPLATE_HASH_ANNOTATION] = template_hash(statefulset)
    return statefulset


def settled(current: Mapping[str, Any]) -> bool:
    """The StatefulSet controller finished the last change and every pod is ready."""
    meta = current.get("metadata") or {}
    want = int((current.get("spec") or {}).get("replicas", 1))
    st = current.get("status") or {}
    return (
        int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and int(st.get("readyReplicas") or 0) == want
        and int(st.get("updatedReplicas") or 0) == want
        and st.get("currentRevision") == st.get("updateRevision")
    )


@dataclasses.dataclass(frozen=True)
class Plan:
    held: Mapping[str, str]  # StatefulSet name -> why its roll waits
    rolling: tuple[str, ...]  # regions whose roll is applied in this pass

    @property
    def message(self) -> str:
        return "; ".join(f"{name}: {why}" for name, why in sorted(self.held.items()))


def plan(
    spec: MeshSpec,
    desired: Sequence[Mapping[str, Any]],
    current: Mapping[str, Mapping[str, Any] | None],
    health: Mapping[str, RegionHealth],
) -> Plan:
    """Decides, per region's NATS StatefulSet in ``desired``, whether it may be applied now.

    ``current`` maps StatefulSet names to what the API server holds (None: absent);
    ``health`` is the last probe per region (absent: not probed, not counted against).
    """
    wanted = {str(o["metadata"]["name"]): o for o in desired if o["kind"] == "StatefulSet"}

    def unavailable(region_name: str) -> str | None:
        """Why this region's NATS is not fully serving now, or None."""
        region = spec.region(region_name)
        if region.down:
            return f"region {region_name} is marked down"
        cur = current.get(names.nats_statefulset(spec.name, region_name))
        if cur is None or not region.nats_running:
            return None  # nothing runs there yet (new region) or by design (Drained)
        if not settled(cur):
            return f"region {region_name}'s NATS pods are not all updated and ready"
        probed = health.get(region_name)
        if probed is not None and not probed.nats.ok and probed.nats.reason != NOT_PROBED:
            return f"region {region_name}'s NATS is unhealthy ({probed.nats.reason})"
        return None

    away = {r.name: why for r in spec.regions if (why := unavailable(r.name)) is not None}
    held: dict[str, str] = {}
    rolling: list[str] = []
    for region in spec.regions:
        name = names.nats_statefulset(spec.name, region.name)
        want, cur = wanted.get(name), current.get(name)
        if want is None or cur is None:
            continue
        previous = ((cur.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_HASH_ANNOTATION)
        if previous == template_hash(want):
            continue  # no restart: scale changes and no-op applies go through
        if region.name in away:
            continue  # already not serving: changing it takes nothing more away
        blockers = [why for other, why in away.items() if other != region.name]
        if blockers:
            held[name] = "waiting: " + "; ".join(blockers)
        else:
            rolling.append(region.name)
            away[region.name] = f"one region at a time: region {region.name} restarts first"
    return Plan(held=held, rolling=tuple(rolling))
