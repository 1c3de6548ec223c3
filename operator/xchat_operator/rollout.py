"""Which NATS StatefulSets and service Deployments may change now: one region at a time.

A change to a pod template (image, config hash, certificate digest, resources)
restarts pods. Applied to every region in one pass it takes every region down at
once: for NATS every replica of every stream, for the services every region's
clients (on 2 loaded cores a dozen new service pods starting together fail their
readiness probes, and the old ones with them). So a template change ("a roll")
is applied to **one region at a time**, and within that region in a fixed order:

1. the region's **NATS** StatefulSet, when its template changed; before it is
   applied the operator hands the region's stream and meta leaderships over to
   the other regions (``reconcile.apply_mesh`` calls the handover hook for every
   region in :attr:`Plan.rolling`, ``replicas.hand_over_region``);
2. once that NATS is settled again (every pod updated and ready: its startup
   probe is nats-server's full ``/healthz``, so caught up), the region's
   **service** Deployments whose template changed, all four together;
3. only when all of them are settled (every replica updated and ready, no old
   one left), the next region.

NATS before services, not the other way round: the region's NATS and its
services are never restarting at the same moment, so while its NATS restarts its
old service pods keep serving (they reconnect to another region's NATS), and
while the services roll (``maxUnavailable: 0``: each old pod serves until its
replacement is ready) the region's NATS is up and current. The new service pods
then start against their own region's new NATS and dial it first; had the
services gone first, their new pods would be pushed to a remote region by the
NATS restart that followed and stay there (a NATS client does not fail back).

A region is *settled* when its NATS StatefulSet has observed its latest
generation with every pod updated and ready, every service Deployment likewise,
and (when probes run) the operator's last probe found its NATS healthy. A roll
of a region starts only when every *other* region is settled. A region that is
itself unsettled (or marked down) may always be changed: that cannot take away
more than is already gone, and it is how a bad image is fixed; its services
still wait for its NATS. Creations, scale changes and applies that leave the
template unchanged are never held. Held rolls are reported (status condition
``RollingOut``) and retried by the resync timer, which re-runs this plan every
period.

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
from .spec import SERVICE_NAMES, MeshSpec

TEMPLATE_HASH_ANNOTATION = "xchat.dev/template-hash"
Obj = dict[str, Any]


def template_hash(workload: Mapping[str, Any]) -> str:
    """A stable digest of a StatefulSet's or Deployment's pod template (what a change to restarts pods)."""
    text = json.dumps(workload["spec"]["template"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamped(workload: Obj) -> Obj:
    """``workload`` with its template hash recorded in an annotation (compared on the next pass)."""
    annotations = workload["metadata"].setdefault("annotations", {})
    annotations[TEMPLATE_HASH_ANNOTATION] = template_hash(workload)
    return workload


def settled(current: Mapping[str, Any]) -> bool:
    """The StatefulSet or Deployment controller finished the last change and every pod is ready."""
    meta = current.get("metadata") or {}
    want = int((current.get("spec") or {}).get("replicas", 1))
    st = current.get("status") or {}
    done = (
        int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and int(st.get("readyReplicas") or 0) == want
        and int(st.get("updatedReplicas") or 0) == want
    )
    if current.get("kind") == "Deployment":
        return done and int(st.get("replicas") or 0) == want  # no old pod left (surge)
    return done and st.get("currentRevision") == st.get("updateRevision")


@dataclasses.dataclass(frozen=True)
class Plan:
    held: Mapping[str, str]  # StatefulSet or Deployment name -> why its roll waits
    rolling: tuple[str, ...]  # regions whose NATS roll is applied in this pass (leaders handed over first)
    services_rolling: tuple[str, ...] = ()  # regions whose service Deployments roll in this pass

    @property
    def message(self) -> str:
        return "; ".join(f"{name}: {why}" for name, why in sorted(self.held.items()))


def _changed(want: Mapping[str, Any] | None, cur: Mapping[str, Any] | None) -> bool:
    """Applying ``want`` over ``cur`` restarts pods (an existing workload whose template changed)."""
    if want is None or cur is None:
        return False
    previous = ((cur.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_HASH_ANNOTATION)
    return previous != template_hash(want)


def plan(
    spec: MeshSpec,
    desired: Sequence[Mapping[str, Any]],
    current: Mapping[str, Mapping[str, Any] | None],
    health: Mapping[str, RegionHealth],
) -> Plan:
    """Decides, per region's NATS StatefulSet and service Deployments in ``desired``, whether each may be applied now.

    ``current`` maps workload names (StatefulSets and Deployments) to what the
    API server holds (None or absent: not there yet); ``health`` is the last
    probe per region (absent: not probed, not counted against).
    """
    wanted = {str(o["metadata"]["name"]): o for o in desired if o["kind"] in ("StatefulSet", "Deployment")}

    def nats_away(region_name: str, *, probed_too: bool = True) -> str | None:
        """Why this region's NATS is not fully serving now, or None (``probed_too``: the
        operator's last probe counts too; without it, only the StatefulSet's rollout)."""
        region = spec.region(region_name)
        if region.down:
            return f"region {region_name} is marked down"
        cur = current.get(names.nats_statefulset(spec.name, region_name))
        if cur is None or not region.nats_running:
            return None  # nothing runs there yet (new region) or by design (Drained)
        if not settled(cur):
            return f"region {region_name}'s NATS pods are not all updated and ready"
        probed = health.get(region_name)
        if probed_too and probed is not None and not probed.nats.ok and probed.nats.reason != NOT_PROBED:
            return f"region {region_name}'s NATS is unhealthy ({probed.nats.reason})"
        return None

    def services_away(region_name: str) -> str | None:
        """Why this region's service Deployments are not all settled, or None."""
        region = spec.region(region_name)
        if region.down:
            return f"region {region_name} is marked down"
        rolling = [s for s in SERVICE_NAMES
                   if (cur := current.get(names.service_workload(spec.name, s, region_name))) is not None
                   and not settled(cur)]
        if rolling:
            return f"region {region_name}'s services {', '.join(rolling)} are not all updated and ready"
        return None

    away: dict[str, str] = {}
    nats_down: dict[str, str] = {}  # its StatefulSet not rolled out (or the region marked down)
    nats_out: dict[str, str] = {}  # that, or its last probe failed: its NATS does not serve now
    for r in spec.regions:
        n, s = nats_away(r.name), services_away(r.name)
        # A region's services wait for its NATS StatefulSet to be rolled out (not for the
        # operator's next probe, which lags by its period): never both restarting at once.
        if (own := nats_away(r.name, probed_too=False)) is not None:
            nats_down[r.name] = own
        if n is not None:
            nats_out[r.name] = n
        if n is not None or s is not None:
            away[r.name] = "; ".join(w for w in (n, s) if w)
    held: dict[str, str] = {}
    rolling: list[str] = []
    services_rolling: list[str] = []
    for region in spec.regions:
        sts_name = names.nats_statefulset(spec.name, region.name)
        nats_change = _changed(wanted.get(sts_name), current.get(sts_name))
        deployments = [names.service_workload(spec.name, s, region.name) for s in SERVICE_NAMES]
        service_changes = [d for d in deployments if _changed(wanted.get(d), current.get(d))]
        if not nats_change and not service_changes:
            continue
        blockers = [why for other, why in away.items() if other != region.name]
        why = "waiting: " + "; ".join(blockers)
        if nats_change:
            # Its NATS restarts now only if nothing else is away, or it is not serving anyway.
            if region.name in nats_out:
                why = f"waiting: {nats_out[region.name]}"  # applied: it is not serving anyway (a fix)
            elif not blockers:
                rolling.append(region.name)  # leaders handed over first (reconcile.apply_mesh)
                away[region.name] = "; ".join(filter(None, (
                    away.get(region.name), f"one region at a time: region {region.name} restarts first")))
                why = f"waiting: region {region.name}'s NATS restarts first"
            else:
                held[sts_name] = why
            for d in service_changes:
                held[d] = why
            continue
        if region.name in nats_down and not region.down:
            for d in service_changes:  # never the region's NATS and its services at once
                held[d] = f"waiting: {nats_down[region.name]}"
            continue
        if region.name in away or not blockers:
            services_rolling.append(region.name)
            away.setdefault(region.name, f"one region at a time: region {region.name}'s services restart first")
        else:
            for d in service_changes:
                held[d] = why
    return Plan(held=held, rolling=tuple(rolling), services_rolling=tuple(services_rolling))
