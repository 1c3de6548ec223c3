"""The ``status`` of an XChatMesh, computed from its spec and the last probes.

Per region: conditions ``Ready``, ``Degraded``, ``Draining``, each with a
reason.  Mesh level: ``phase``, ``readyRegions`` ("ready/expected", shown as a
printer column), conditions ``Ready``, ``Paused``, ``Reconciled``.  Every
condition and the status itself carry ``observedGeneration``.

Regions marked ``down`` and regions draining are not *expected* to be ready:
the mesh is Ready when every active, non-down region is — the rest stops
waiting for a region an operator declared lost.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from .probes import RegionHealth
from .replicas import MoveState
from .spec import MeshSpec, Region, RegionMode

Condition = dict[str, Any]


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str, ok: bool, reason: str, message: str, generation: int,
    previous: Sequence[Mapping[str, Any]] = (), at: str | None = None,
) -> Condition:
    """A condition; ``lastTransitionTime`` is kept from ``previous`` if the status did not flip."""
    status = "True" if ok else "False"
    ltt = at or now()
    for p in previous:
        if p.get("type") == type_ and p.get("status") == status and p.get("lastTransitionTime"):
            ltt = str(p["lastTransitionTime"])
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": ltt}


def region_status(
    spec: MeshSpec, region: Region, health: RegionHealth | None, previous: Mapping[str, Any] | None = None,
    move: MoveState | None = None,
) -> dict[str, Any]:
    """``move``: the last replica move pass of a Draining region (``replicas``): its reason
    (ReplicasMoved, MovingReplicas, NoRegionFree, AdminUnavailable) becomes the Draining
    condition's once one has run."""
    prev = list((previous or {}).get("conditions") or ())
    gen = spec.generation
    if region.down:
        ready = (False, "MarkedDown", "spec.regions[].down is true: not waited for, peers kept")
        degraded = (True, "MarkedDown", "region declared lost by an operator")
    elif region.mode is RegionMode.DRAINING:
        ready = (False, "Draining", "clients pointed away; NATS still running")
        degraded = (False, "Draining", "")
    elif region.mode is RegionMode.DRAINED:
        ready = (False, "Drained", "NATS scaled to 0; PVCs kept")
        degraded = (False, "Drained", "")
    elif health is None:
        ready = (False, "NotProbed", "no health probe has run yet")
        degraded = (False, "NotProbed", "")
    elif health.ready:
        ready = (True, "Healthy", health.message)
        degraded = (False, "Healthy", "")
    else:
        ready = (False, health.reason, health.message)
        # Degraded: something runs but not everything (vs. nothing at all, e.g. a fresh region).
        partial = health.nats.ok or any(c.ok for c in health.services.values())
        degraded = (partial, health.reason, health.message)
    if region.mode is RegionMode.DRAINING:
        draining = (True, "ClientsDrained", "services scaled to 0 and removed from the endpoint list")
        if move is not None:
            draining = (True, move.reason, move.message)
    elif region.mode is RegionMode.DRAINED:
        draining = (True, "NatsScaledDown", "NATS StatefulSet scaled to 0, PVCs retained; safe to remove")
    else:
        draining = (False, "Active", "")
    out: dict[str, Any] = {
        "name": region.name,
        "mode": region.mode.value,
        "down": region.down,
        "observedGeneration": gen,
        "conditions": [
            condition("Ready", *ready, gen, prev),
            condition("Degraded", *degraded, gen, prev),
            condition("Draining", *draining, gen, prev),
        ],
    }
    if health is not None and not region.down and region.mode is RegionMode.ACTIVE:
        out["nats"] = health.nats.reason
        out["services"] = {s: c.reason for s, c in health.services.items()}
    return out


def expected_regions(spec: MeshSpec) -> list[Region]:
    return [r for r in spec.regions if r.serving]


def mesh_status(
    spec: MeshSpec,
    health: Mapping[str, RegionHealth],
    previous: Mapping[str, Any] | None = None,
    *,
    reconciled: tuple[bool, str, str] = (True, "Applied", ""),
    rolling_out: tuple[bool, str, str] = (False, "Settled", ""),
    moves: Mapping[str, MoveState] | None = None,
) -> dict[str, Any]:
    previous = previous or {}
    moves = moves or {}
    prev_regions = {r.get("name"): r for r in previous.get("regions") or ()}
    prev_conditions = list(previous.get("conditions") or ())
    gen = spec.generation
    regions = [region_status(spec, r, health.get(r.name), prev_regions.get(r.name), moves.get(r.name))
               for r in spec.regions]
    expected = expected_regions(spec)
    ready = [r for r in expected if r.name in health and health[r.name].ready]
    if spec.paused:
        phase = "Paused"
    elif not health:
        phase = "Pending"
    elif len(ready) == len(expected):
        phase = "Running"
    else:
        phase = "Degraded"
    not_ready = [r.name for r in expected if r not in ready]
    return {
        "observedGeneration": gen,
        "phase": phase,
        "readyRegions": f"{len(ready)}/{len(expected)}",
        "regions": regions,
        "conditions": [
            condition("Ready", bool(expected) and not not_ready,
                      "AllRegionsReady" if not not_ready else "RegionsNotReady",
                      "" if not not_ready else "not ready: " + ", ".join(not_ready), gen, prev_conditions),
            condition("Paused", spec.paused, "PauseAnnotation" if spec.paused else "NotPaused",
                      "xchat.dev/paused=true: reconciliation stopped" if spec.paused else "", gen, prev_conditions),
            condition("Reconciled", *reconciled, gen, prev_conditions),
            condition("RollingOut", *rolling_out, gen, prev_conditions),
        ],
    }


def rolling_out(held: Mapping[str, str], rolling: Sequence[str], services_rolling: Sequence[str] = (),
                handover: str = "") -> tuple[bool, str, str]:
    """The RollingOut condition from a rollout plan: which regions restart now, which wait and why.

    ``handover``: what the last leadership handover of this roll could not do
    (leaders left in the region when its NATS was restarted), kept until the roll ends.
    """
    if not held and not rolling and not services_rolling:
        return (False, "Settled", "")
    parts = [f"restarting NATS of region {', '.join(rolling)}"] if rolling else []
    parts += [f"restarting the services of region {', '.join(services_rolling)}"] if services_rolling else []
    if handover:
        parts.append(f"leadership handover incomplete: {handover}")
    parts += [f"{name} held ({why})" for name, why in sorted(held.items())]
    return (True, "OneRegionAtATime", "; ".join(parts))


def with_condition(previous: Mapping[str, Any] | None, cond: Condition) -> dict[str, Any]:
    """A status patch that replaces one mesh-level condition and keeps the others."""
    prev = [c for c in (previous or {}).get("conditions") or () if c.get("type") != cond["type"]]
    return {"conditions": prev + [cond]}


def paused_patch(spec: MeshSpec, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """Status written while paused: keep regions as they were, flip the Paused condition."""
    previous = dict(previous or {})
    prev_conditions = list(previous.get("conditions") or ())
    others = [c for c in prev_conditions if c.get("type") not in ("Paused",)]
    return {
        "observedGeneration": spec.generation,
        "phase": "Paused",
        "conditions": others + [condition("Paused", True, "PauseAnnotation",
                                          "xchat.dev/paused=true: reconciliation stopped",
                                          spec.generation, prev_conditions)],
    }
