"""kopf handlers: thin wrappers that parse, call ``reconcile``/``probes``/``status``, post events.

Entry points of the operator process:

* create/update/resume of an XChatMesh → :func:`reconcile.apply_mesh`, status;
* a timer per mesh → re-apply (drift), probe every serving region, status;
* watch events of owned children → re-create a deleted child, undo an edit;
* delete of an XChatMesh (kopf finalizer ``xchat.dev/finalizer``) → :func:`reconcile.cleanup`.

The memo carries ``kube`` (API adapter), ``prober`` and ``config``
(:class:`~.settings.OperatorSettings`); tests pre-fill it to inject fakes.
Settings are read from the environment here, at the process edge, once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any, cast

import kopf

from . import drift, metrics, names, reconcile, replicas, safety, status, token_rotation
from .errors import DependencyMissing, KubeError, OperatorError, to_kopf
from .kube import Kube, load_connection
from .probes import Check, RegionHealth, make_default_prober, not_probed
from .errors import SpecError
from .settings import OperatorSettings, from_env
from .spec import GROUP, PLURAL, VERSION, MeshSpec, RegionMode, parse_mesh

try:
    CONFIG = from_env()
except SpecError as _exc:
    # Settings are read once, at import (kopf needs the timer interval here):
    # a malformed variable ends the process with one line, not a traceback.
    raise SystemExit(f"xchat-operator: {_exc}") from None
FINALIZER = "xchat.dev/finalizer"
Logger = logging.Logger | logging.LoggerAdapter[Any]
MANAGED = {"app.kubernetes.io/managed-by": names.MANAGED_BY}
CHILD_RESOURCES: tuple[tuple[str, str, str], ...] = (
    ("", "v1", "configmaps"),
    ("", "v1", "secrets"),
    ("", "v1", "services"),
    ("apps", "v1", "statefulsets"),
    ("apps", "v1", "deployments"),
    ("policy", "v1", "poddisruptionbudgets"),
)
KIND_OF_PLURAL = {"configmaps": "ConfigMap", "secrets": "Secret", "services": "Service",
                  "statefulsets": "StatefulSet", "deployments": "Deployment",
                  "poddisruptionbudgets": "PodDisruptionBudget"}


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Same credentials as our own client (in-cluster, else kubeconfig / $KUBECONFIG)."""
    c = load_connection()
    return kopf.ConnectionInfo(server=c.host, token=c.token, scheme="Bearer" if c.token else None,
                               ca_path=c.ca_file, insecure=not c.verify,
                               certificate_path=c.cert_file, private_key_path=c.key_file)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, logger: Logger, **_: Any) -> None:
    cfg: OperatorSettings = memo.get("config") or CONFIG
    memo["config"] = cfg
    # Shared by every resource memo (shallow copies): per-mesh locks and applied generations.
    memo.setdefault("locks", {})
    memo.setdefault("applied", {})
    memo.setdefault("ledgers", {})  # per mesh: what was applied last, to tell drift from change
    # Keep kopf's bookkeeping out of status (which has a strict schema) and under our prefix.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="xchat.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="xchat.dev", key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.WARNING  # events are posted explicitly for what we did
    settings.watching.server_timeout = 300
    # A timer caught mid-run when its mesh is deleted is polled at this period before the
    # finalizer is released; kopf's 60 s default would hold every deletion that long.
    settings.background.cancellation_polling = 1.0
    settings.networking.request_timeout = 30
    import os  # the process edge: explicit env overrides of CLI peering flags

    if os.environ.get("XCHAT_OPERATOR_PEERING"):
        settings.peering.name = cfg.peering.name
        settings.peering.mandatory = True
    if os.environ.get("XCHAT_OPERATOR_PRIORITY"):
        settings.peering.priority = cfg.peering.priority
    if os.environ.get("XCHAT_OPERATOR_STANDALONE"):
        settings.peering.standalone = cfg.peering.standalone
    if "kube" not in memo:
        memo["kube"] = Kube.from_environment()
    if "prober" not in memo:
        memo["prober"] = make_default_prober(cfg.probes.timeout) if cfg.probes.enabled else not_probed
    logger.info("xchat operator configured: identity=%s peering=%s priority=%s standalone=%s",
                cfg.identity, settings.peering.name, settings.peering.priority, settings.peering.standalone)
    if cfg.metrics_port:
        logger.info("metrics on port %d", metrics.serve(cfg.metrics_port))


@kopf.on.cleanup()
def stop_metrics(**_: Any) -> None:
    metrics.stop()


def _parse(body: Mapping[str, Any]) -> MeshSpec:
    try:
        return parse_mesh(body)
    except OperatorError as exc:
        raise to_kopf(exc) from exc


def _post(obj: Mapping[str, Any], *, reason: str, message: str, warning: bool = False) -> None:
    """An event on ``obj`` (kopf.event ignores posting.level, which filters log records only)."""
    kopf.event(cast(kopf.Body, obj), type="Warning" if warning else "Normal", reason=reason, message=message)


def _report_failure(memo: kopf.Memo, body: Mapping[str, Any], spec: MeshSpec, reason: str, message: str) -> None:
    """Reconciled=False with the reason in status, and a Warning event, unless both already say so.

    Written straight to the status subresource: a handler that raises (to be retried)
    cannot count on its kopf patch being applied.
    """
    kube: Kube = memo["kube"]
    latest = kube.get("XChatMesh", spec.namespace, spec.name) or body
    previous = dict(latest.get("status") or {})
    cond = status.condition("Reconciled", False, reason, message, spec.generation, previous.get("conditions") or ())
    same = [c for c in previous.get("conditions") or () if c.get("type") == "Reconciled"
            and c.get("status") == "False" and c.get("reason") == reason and c.get("message") == message]
    metrics.ERRORS.labels(reason).inc()
    if same:
        return
    patch = status.with_condition(previous, cond)
    patch["observedGeneration"] = spec.generation
    try:
        kube.merge_patch("XChatMesh", spec.namespace, spec.name, {"status": patch}, subresource="status")
    except KubeError:
        pass  # the event below still tells; the retry writes the status again
    _post(latest, reason=reason, message=f"{message} [{_identity(memo)}]", warning=True)


def _failure_reason(exc: OperatorError) -> str:
    if isinstance(exc, DependencyMissing):
        return "DependencyMissing"
    if isinstance(exc, KubeError) and exc.status == 422:
        return "ChildRejected"  # Kubernetes refused an object built from the spec
    if isinstance(exc, KubeError) and exc.status == 403:
        return "Forbidden"
    return "ApplyFailed"


def _refused(memo: kopf.Memo, body: Mapping[str, Any], spec: MeshSpec) -> bool:
    """True (and reported) when :mod:`safety` refuses the spec: nothing is applied."""
    reasons = safety.refusals(spec)
    if reasons:
        _report_failure(memo, body, spec, "UnsafeSpec", "; ".join(reasons))
    return bool(reasons)


def _identity(memo: kopf.Memo) -> str:
    cfg: OperatorSettings = memo["config"]
    return cfg.identity or "operator"


def _apply(spec: MeshSpec, memo: kopf.Memo, body: Mapping[str, Any], *, trigger: str = "change") -> reconcile.ApplyResult | None:
    """Apply under the mesh's lock; ``None`` if a newer generation was applied meanwhile.

    The timer runs concurrently with the change handlers (and the child-event
    handlers): without the lock and the generation check, a timer holding an
    older spec could re-apply old objects and prune a just-added region.
    """
    key = spec.uid or f"{spec.namespace}/{spec.name}"
    lock = memo["locks"].setdefault(key, threading.Lock())
    with lock:
        applied: dict[str, int] = memo["applied"]
        if spec.generation < applied.get(key, 0):
            metrics.RECONCILES.labels(trigger, "superseded").inc()
            return None
        try:
            with metrics.RECONCILE_SECONDS.labels(trigger).time():
                result = reconcile.apply_mesh(memo["kube"], spec, cluster_domain=memo["config"].cluster_domain,
                                              health=_health(memo), ledger=_ledger(memo, key),
                                              handover=_handover(memo))
        except OperatorError as exc:
            metrics.RECONCILES.labels(trigger, "failed").inc()
            _report_failure(memo, body, spec, _failure_reason(exc), str(exc))
            raise to_kopf(exc) from exc
        applied[key] = spec.generation
        metrics.RECONCILES.labels(trigger, "applied").inc()
        return result


def _handover(memo: kopf.Memo) -> reconcile.Handover | None:
    """What hands a region's leaderships over before its NATS rolls: the memo's ``handover``
    (tests inject one), else the jsadmin/jsmeta one where the operator dials the mesh at all
    (probes enabled: with probes off, e.g. envtest, no NATS is reachable)."""
    hook: reconcile.Handover | None = memo.get("handover")
    if hook is not None:
        return hook
    cfg: OperatorSettings = memo["config"]
    if not cfg.probes.enabled:
        return None
    kube: Kube = memo["kube"]

    def run(spec: MeshSpec, region: Any) -> replicas.Handover:
        # Called from a worker thread (the change handler's executor, the timer's to_thread):
        # no event loop runs there, so the handover gets its own.
        return asyncio.run(replicas.hand_over_region(kube, spec, region, cluster_domain=cfg.cluster_domain))

    return run


def _rolling_out(memo: kopf.Memo, spec: MeshSpec, body: Mapping[str, Any],
                 result: reconcile.ApplyResult) -> tuple[bool, str, str]:
    """The RollingOut condition; posts an event per handover (a Warning when leaders were left behind)."""
    problems: dict[str, str] = memo.setdefault("handover_problems", {})
    key = spec.uid or f"{spec.namespace}/{spec.name}"
    for h in result.handovers:
        if h.done:
            problems.pop(key, None)
            _post(body, reason="LeadershipHandedOver", message=f"before restarting NATS: {h.message} [{_identity(memo)}]")
        else:
            problems[key] = h.message
            _post(body, reason="LeadershipNotHandedOver",
                  message=f"restarting region {h.region}'s NATS with leaders still there: {h.message} [{_identity(memo)}]",
                  warning=True)
    plan = result.rollout
    cond = status.rolling_out(plan.held, plan.rolling, plan.services_rolling, problems.get(key, ""))
    if not cond[0]:
        problems.pop(key, None)
    return cond


def _ledger(memo: kopf.Memo, key: str) -> drift.Ledger:
    ledgers: dict[str, drift.Ledger] = memo["ledgers"]
    return ledgers.setdefault(key, drift.Ledger())


def _report_drift(memo: kopf.Memo, body: Mapping[str, Any], result: reconcile.ApplyResult) -> None:
    """One event per kind of correction, naming the objects put back."""
    for what in (drift.RECREATED, drift.CORRECTED):
        objs = [name for change, name in result.drifted if change == what]
        if objs:
            metrics.RECONCILES.labels("drift", what.lower()).inc(len(objs))
            _post(body, reason=what, message=f"{what.lower()} {', '.join(objs)} [{_identity(memo)}]")


def _health(memo: kopf.Memo) -> dict[str, RegionHealth]:
    """The last probe per region of this mesh (replaced whole by the timer, never emptied in place)."""
    health: dict[str, RegionHealth] = memo.setdefault("health", {})
    return health


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile_mesh(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, reason: str, **_: Any) -> None:
    spec = _parse(body)
    previous = dict(body.get("status") or {})
    if spec.paused:
        paused = status.paused_patch(spec, previous)
        patch.status.update(paused)
        metrics.mesh_status(spec.namespace, spec.name, paused, {})
        if previous.get("phase") != "Paused":
            _post(body, reason="Paused", message=f"reconciliation paused by annotation [{_identity(memo)}]")
        return
    if _refused(memo, body, spec):
        return
    result = _apply(spec, memo, body)
    if result is None:
        return  # a newer generation is already applied; its handler writes the status
    _report_drift(memo, body, result)
    new = status.mesh_status(spec, _health(memo), previous,
                             reconciled=(True, "Applied", f"{result.applied} objects applied"),
                             rolling_out=_rolling_out(memo, spec, body, result),
                             moves=_moves(memo, spec))
    new["reconciledBy"] = _identity(memo)
    new["reconciles"] = int(previous.get("reconciles") or 0) + 1
    _token_keys_status(memo, body, spec, previous, new)
    patch.status.update(new)
    metrics.mesh_status(spec.namespace, spec.name, new, {})
    msg = f"{reason}: applied {result.applied} objects"
    if result.pruned:
        msg += f", pruned {', '.join(result.pruned)}"
    if result.created_secrets:
        msg += f", generated {', '.join(result.created_secrets)}"
    _post(body, reason="Reconciled", message=f"{msg} [{_identity(memo)}]")


@kopf.timer(GROUP, VERSION, PLURAL, interval=CONFIG.resync.interval, idle=CONFIG.resync.idle)
async def resync(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    kube: Kube = memo["kube"]
    meta = body.get("metadata", {})
    # The timer's body can be older than a change being handled right now: read it fresh.
    fresh = await asyncio.to_thread(kube.get, "XChatMesh", meta.get("namespace"), meta.get("name"))
    if fresh is None or fresh.get("metadata", {}).get("deletionTimestamp"):
        return
    spec = _parse(fresh)
    previous = dict(fresh.get("status") or {})
    if spec.paused:
        patch.status.update(status.paused_patch(spec, previous))
        return
    if await asyncio.to_thread(_refused, memo, fresh, spec):
        return
    # Drift: re-apply (a no-op when nothing changed); continues a held NATS roll.
    result = await asyncio.to_thread(lambda: _apply(spec, memo, fresh, trigger="timer"))
    if result is None:
        return
    _report_drift(memo, fresh, result)
    health: dict[str, RegionHealth] = {}
    prober = memo["prober"]
    regions = [r for r in spec.regions if r.serving]
    results = await asyncio.gather(*(prober(memo["kube"], spec, r) for r in regions), return_exceptions=True)
    for region, res in zip(regions, results):
        if isinstance(res, BaseException):
            # A broken probe is a not-ready region, never a crashed handler.
            c = Check(ok=False, reason="ProbeFailed", message=repr(res))
            metrics.ERRORS.labels("ProbeFailed").inc()
            health[region.name] = RegionHealth(region=region.name, nats=c, services={"probe": c})
        else:
            health[region.name] = res
    memo["health"] = health
    # A region that just became healthy for the first time is published to clients now.
    await asyncio.to_thread(reconcile.publish_endpoints, kube, spec, health,
                            cluster_domain=memo["config"].cluster_domain)
    await _move_replicas(memo, spec)
    new = status.mesh_status(spec, health, previous,
                             rolling_out=_rolling_out(memo, spec, fresh, result),
                             moves=_moves(memo, spec))
    latest = await asyncio.to_thread(kube.get, "XChatMesh", spec.namespace, spec.name)
    if latest is None or latest["metadata"].get("generation") != spec.generation:
        return  # the spec changed while probing: the next run reports on the new one
    if new["phase"] != previous.get("phase") and previous.get("phase"):
        _post(body, reason=f"Phase{new['phase']}",
                  message=f"phase {previous.get('phase')} -> {new['phase']}, ready regions {new['readyRegions']}")
    await asyncio.to_thread(_token_keys_status, memo, body, spec, previous, new)
    patch.status.update(new)
    metrics.mesh_status(spec.namespace, spec.name, new, {name: h.ready for name, h in health.items()})


def _token_keys_status(memo: kopf.Memo, body: Mapping[str, Any], spec: MeshSpec,
                       previous: Mapping[str, Any], new: dict[str, Any]) -> None:
    """``status.tokenKeys`` and the TokenKeyRotation condition into ``new``; an event per rotation step."""
    tokens = token_rotation.observe(memo["kube"], spec)
    new["tokenKeys"] = tokens
    new["conditions"].append(status.condition(token_rotation.CONDITION, *token_rotation.condition_args(tokens),
                                              spec.generation, previous.get("conditions") or ()))
    for reason, message in token_rotation.transitions(previous.get("tokenKeys"), tokens):
        _post(body, reason=reason, message=f"{message} [{_identity(memo)}]")


def _moves(memo: kopf.Memo, spec: MeshSpec) -> dict[str, replicas.MoveState]:
    """The last replica-move pass of each region still Draining (others are forgotten)."""
    moves: dict[str, tuple[replicas.MoveState, set[tuple[str, str]]]] = memo.setdefault("moves", {})
    draining = {r.name for r in spec.regions if r.mode is RegionMode.DRAINING}
    for name in set(moves) - draining:
        del moves[name]
    return {name: state for name, (state, _) in moves.items()}


async def _move_replicas(memo: kopf.Memo, spec: MeshSpec) -> None:
    """One pass of :func:`replicas.move_off` per Draining region (the timer's cadence).

    Only where the operator dials the mesh at all (probes enabled): with probes
    off (envtest, no NATS running) the region stays at ``ClientsDrained``.
    """
    moves: dict[str, tuple[replicas.MoveState, set[tuple[str, str]]]] = memo.setdefault("moves", {})
    if not memo["config"].probes.enabled:
        return
    for region in spec.regions:
        if region.mode is not RegionMode.DRAINING:
            continue
        previous, requested = moves.get(region.name, (None, set()))
        state = await replicas.move_off(memo["kube"], spec, region, requested,
                                        cluster_domain=memo["config"].cluster_domain)
        moves[region.name] = (state, requested)
        if previous is None or previous.reason != state.reason:
            _post(_mesh_ref(spec), reason=state.reason, message=f"region {region.name}: {state.message}",
                  warning=state.reason in (replicas.NO_REGION_FREE, replicas.UNAVAILABLE))
    removed, problem = await replicas.remove_departed(memo["kube"], spec, cluster_domain=memo["config"].cluster_domain)
    if removed:
        _post(_mesh_ref(spec), reason="ServersRemoved",
              message=f"removed {', '.join(removed)} (no region of the spec) from the JetStream meta group")
    if problem and memo.get("meta_problem") != problem:
        _post(_mesh_ref(spec), reason="ServerRemoveFailed", message=problem, warning=True)
    memo["meta_problem"] = problem


# Seconds between placement-keeper passes per mesh (xchat.mesh.placement, ADR 0013): bounds how
# long the hedge stream's leader may share a region with the mailbox stream's after an election.
PLACEMENT_INTERVAL_S = 5.0


@kopf.timer(GROUP, VERSION, PLURAL, interval=PLACEMENT_INTERVAL_S, idle=CONFIG.resync.idle)
async def keep_placement(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Moves the hedge stream's leader out of the mailbox stream's leader's region (one pass)."""
    if not memo["config"].probes.enabled or body.get("metadata", {}).get("deletionTimestamp"):
        return
    try:
        spec = _parse(body)
    except SpecError:
        return  # the resync timer reports it
    if spec.paused:
        return
    move, problem = await replicas.keep_hedge_apart(memo["kube"], spec, cluster_domain=memo["config"].cluster_domain)
    if move is not None:
        _post(_mesh_ref(spec), reason="HedgeLeaderMoved",
              message=f"hedge stream's leader {move.server} shared region {move.from_region} with the mailbox "
                      f"stream's: handed to region {move.to_region}")
    if problem and memo.get("placement_problem") != problem:
        _post(_mesh_ref(spec), reason="PlacementUnavailable", message=problem, warning=True)
    memo["placement_problem"] = problem


def _mesh_ref(spec: MeshSpec) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "XChatMesh",
            "metadata": {"name": spec.name, "namespace": spec.namespace, "uid": spec.uid}}


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete_mesh(body: kopf.Body, memo: Any, logger: Logger, **_: Any) -> None:
    spec = _parse(body)
    try:
        deleted = reconcile.cleanup(memo["kube"], spec)
    except OperatorError as exc:
        raise to_kopf(exc) from exc
    metrics.forget(spec.namespace, spec.name)
    logger.info("deleted %d children of %s/%s (PVCs kept)", len(deleted), spec.namespace, spec.name)


def _last_writer(body: Mapping[str, Any]) -> str:
    entries = body.get("metadata", {}).get("managedFields") or []
    entries = [e for e in entries if e.get("subresource", "") == ""]
    if not entries:
        return ""
    return str(max(entries, key=lambda e: str(e.get("time", ""))).get("manager", ""))


def on_child_event(event: kopf.RawEvent, body: kopf.Body, resource: kopf.Resource,
                   memo: Any, logger: Logger, **_: Any) -> None:
    """A deleted child comes back; a child edited by someone else is re-applied."""
    etype = event.get("type")
    if etype not in ("DELETED", "MODIFIED"):
        return
    if etype == "MODIFIED" and _last_writer(body) in ("", "xchat-operator"):
        return
    mesh_name = (body.get("metadata", {}).get("labels") or {}).get(names.LABEL_MESH)
    namespace = body.get("metadata", {}).get("namespace")
    if not mesh_name or not namespace:
        return
    kube: Kube = memo["kube"]
    mesh = kube.get("XChatMesh", namespace, mesh_name)
    if mesh is None or mesh.get("metadata", {}).get("deletionTimestamp"):
        return
    spec = parse_mesh(mesh)
    kind = KIND_OF_PLURAL[resource.plural]
    if spec.paused:
        return
    key = spec.uid or f"{spec.namespace}/{spec.name}"
    lock = memo["locks"].setdefault(key, threading.Lock())
    try:
        with lock:
            # None when the timer put it back first (and reported it) or it is no longer desired.
            what = reconcile.repair_child(kube, spec, kind, body["metadata"]["name"],
                                          cluster_domain=memo["config"].cluster_domain, ledger=_ledger(memo, key))
    except OperatorError as exc:
        raise to_kopf(exc) from exc
    if what is not None:
        metrics.RECONCILES.labels("child", "repaired").inc()
        _post(mesh, reason=what, message=f"{what.lower()} {kind}/{body['metadata']['name']} [{_identity(memo)}]")


for _group, _version, _plural in CHILD_RESOURCES:
    kopf.on.event(group=_group, version=_version, plural=_plural, labels=MANAGED, id=f"child-{_plural}")(on_child_event)
