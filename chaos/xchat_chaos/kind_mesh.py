"""Changing an XChatMesh on kind the way an operator would: spec edits and a helm upgrade.

The ``kind`` back end's topology changes and upgrades (``scale-region``,
``upgrade``) go through the API only, and wait on what the operator reports:

- **add a region**: a JSON patch appending ``{name, natsNodes, storage}`` (copied
  from the first region) to ``spec.regions``; done when the mesh's status has
  observed that generation and ``readyRegions`` counts it ready.
- **drain**: ``mode: Draining`` (clients leave, then the operator moves the
  region's replicas to the others with its ``jsadmin`` NATS user: ``Draining``
  reason ``ReplicasMoved``; NATS keeps running, as in the local drain). Every
  patch carries a JSON-patch ``test`` of the region's name at its index, so a
  concurrent edit fails the patch instead of draining the wrong region.
- **remove**: ``mode: Drained`` (NATS scaled to 0: reason ``NatsScaledDown``),
  then the entry deleted (the CRD refuses unless it is ``Drained``); done when
  the status no longer lists it and the mesh is ``Ready``. The operator then
  takes the region's servers out of the meta group (``jsmeta``, the system
  account's one user), which the drill's redundancy check waits for.
- **upgrade**: ``helm upgrade --reuse-values`` with the new xchat image tag and
  NATS tag; done when every NATS StatefulSet and service Deployment of the mesh
  runs its latest revision with all pods ready, and the mesh is ``Ready`` with
  ``RollingOut`` false. The operator rolls NATS one region at a time: the drill
  samples the mesh's ready regions meanwhile (``ready_regions``).

The replica moves and the meta-group removal are the operator's
(``xchat_operator.replicas``); the drill only edits the spec and waits.

Polling is bounded by a number of attempts with an injected ``sleep``, so the
unit tests run against a fake kubectl/helm without waiting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from xchat_chaos.backend import BackendError
from xchat_chaos.kind_commands import (
    READY_TIMEOUT_S, REGION_LABEL, REGION_POD_LABEL, SERVICES, Runner, nats_selector, services_selector,
)

MESH_POLL_S = 2.0
# Copied from an existing region to a new one (equal natsNodes is a CRD rule).
REGION_TEMPLATE_FIELDS = ("natsNodes", "storage", "topologyKey")


def condition(conditions: Any, type_: str) -> Mapping[str, Any]:
    for cond in conditions or ():
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def observed(doc: Mapping[str, Any]) -> bool:
    """The operator's status describes the current spec generation."""
    generation = int((doc.get("metadata") or {}).get("generation") or 0)
    return int((doc.get("status") or {}).get("observedGeneration") or 0) >= generation


def region_status(doc: Mapping[str, Any], region: str) -> Mapping[str, Any] | None:
    for entry in (doc.get("status") or {}).get("regions") or ():
        if entry.get("name") == region:
            return dict(entry)
    return None


def mesh_ready(doc: Mapping[str, Any]) -> bool:
    status = doc.get("status") or {}
    return (
        observed(doc)
        and condition(status.get("conditions"), "Ready").get("status") == "True"
        and condition(status.get("conditions"), "RollingOut").get("status") != "True"
    )


def ready_region_names(doc: Mapping[str, Any]) -> list[str]:
    return [
        str(r.get("name"))
        for r in (doc.get("status") or {}).get("regions") or ()
        if condition(r.get("conditions"), "Ready").get("status") == "True"
    ]


def ready_by_workloads(items: Iterable[Mapping[str, Any]], regions: Iterable[str]) -> list[str]:
    """Regions whose NATS StatefulSet has every pod ready and whose service Deployments
    each have a ready pod (what the pods say now, not the operator's last probe)."""
    nats_ok: dict[str, bool] = {}
    services_ok: dict[str, bool] = {}
    for item in items:
        region = str(((item.get("metadata") or {}).get("labels") or {}).get(REGION_POD_LABEL, ""))
        want = int((item.get("spec") or {}).get("replicas", 1))
        ready = int((item.get("status") or {}).get("readyReplicas") or 0)
        if item.get("kind") == "StatefulSet":
            nats_ok[region] = nats_ok.get(region, True) and want > 0 and ready == want
        else:
            services_ok[region] = services_ok.get(region, True) and ready >= 1
    return [r for r in regions if nats_ok.get(r) and services_ok.get(r)]


def rolled(item: Mapping[str, Any]) -> bool:
    """A StatefulSet or Deployment running its latest template with every pod ready."""
    meta, spec, status = item.get("metadata") or {}, item.get("spec") or {}, item.get("status") or {}
    want = int(spec.get("replicas", 1))
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    if int(status.get("readyReplicas") or 0) != want or int(status.get("updatedReplicas") or 0) != want:
        return False
    if item.get("kind") == "StatefulSet":
        return bool(status.get("currentRevision")) and status.get("currentRevision") == status.get("updateRevision")
    return int(status.get("replicas") or 0) == want  # no old pod left over


class MeshEditor:
    """Spec edits, helm upgrades and waits on one XChatMesh (commands through ``runner``)."""

    def __init__(
        self, *, run: Runner, context: str, namespace: str, mesh: str,
        sleep: Callable[[float], None] = time.sleep, timeout: float = READY_TIMEOUT_S,
    ) -> None:
        self._run = run
        self.context = context
        self.namespace = namespace
        self.mesh = mesh
        self._sleep = sleep
        self._attempts = max(1, int(timeout / MESH_POLL_S))

    def _kubectl(self, *args: str) -> str:
        return self._run(["kubectl", "--context", self.context, *args])

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self._kubectl("get", "xchatmesh", "-n", self.namespace, self.mesh, "-o", "json"))
        return doc

    def spec_regions(self) -> list[str]:
        return [str(r["name"]) for r in self.document().get("spec", {}).get("regions") or ()]

    def _patch(self, ops: list[dict[str, Any]]) -> None:
        self._kubectl("patch", "xchatmesh", "-n", self.namespace, self.mesh, "--type", "json", "-p", json.dumps(ops))

    def _index(self, region: str) -> int:
        names = self.spec_regions()
        if region not in names:
            raise BackendError(f"XChatMesh {self.namespace}/{self.mesh} has no region {region!r} (regions: {names})")
        return names.index(region)

    def wait(self, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for attempt in range(self._attempts):
            doc = self.document()
            if done(doc):
                return doc
            if attempt + 1 < self._attempts:
                self._sleep(MESH_POLL_S)
        status = doc.get("status") or {}
        raise BackendError(
            f"XChatMesh {self.namespace}/{self.mesh}: timed out waiting for {what} "
            f"(phase {status.get('phase')}, readyRegions {status.get('readyRegions')}, "
            f"conditions {[(c.get('type'), c.get('status'), c.get('reason')) for c in status.get('conditions') or ()]})"
        )

    # -- the region lifecycle -------------------------------------------

    def add_region(self, region: str) -> None:
        doc = self.document()
        regions = doc.get("spec", {}).get("regions") or []
        if any(r.get("name") == region for r in regions):
            raise BackendError(f"XChatMesh {self.namespace}/{self.mesh} already has region {region!r}")
        template = regions[0] if regions else {}
        entry = {"name": region, **{k: template[k] for k in REGION_TEMPLATE_FIELDS if k in template}}
        # The chart pins each region to the nodes labelled with it; so is the new one
        # (copied as is, it would put region d's pods on region a's node).
        selector = dict(template.get("nodeSelector") or {})
        if REGION_LABEL in selector:
            entry["nodeSelector"] = {**selector, REGION_LABEL: region}
        self._patch([{"op": "add", "path": "/spec/regions/-", "value": entry}])

        def serving(d: dict[str, Any]) -> bool:
            entry = region_status(d, region)
            return observed(d) and entry is not None and region in ready_region_names(d) and mesh_ready(d)

        self.wait(serving, f"region {region} to be ready")

    def _set_mode(self, region: str, mode: str, reason: str) -> None:
        index = self._index(region)
        self._patch([
            {"op": "test", "path": f"/spec/regions/{index}/name", "value": region},
            {"op": "replace", "path": f"/spec/regions/{index}/mode", "value": mode},
        ])

        def reached(d: dict[str, Any]) -> bool:
            entry = region_status(d, region)
            return observed(d) and entry is not None and condition(entry.get("conditions"), "Draining").get("reason") == reason

        self.wait(reached, f"region {region} to report Draining={reason}")

    def drain_region(self, region: str) -> None:
        # Clients leave, the operator moves the replicas; NATS keeps running (the local drain).
        self._set_mode(region, "Draining", "ReplicasMoved")

    def remove_region(self, region: str) -> None:
        # NATS scaled to 0, then the entry deleted; the operator then takes the region's
        # servers out of the meta group (the local remove's SERVER.REMOVE).
        self._set_mode(region, "Drained", "NatsScaledDown")
        index = self._index(region)
        self._patch([
            {"op": "test", "path": f"/spec/regions/{index}/name", "value": region},
            {"op": "remove", "path": f"/spec/regions/{index}"},
        ])
        self.wait(lambda d: region_status(d, region) is None and mesh_ready(d), f"region {region} to be gone and the mesh Ready")

    # -- upgrades --------------------------------------------------------

    def upgrade(self, *, release: str, chart: str, image_tag: str | None, nats_tag: str | None) -> dict[str, Any]:
        """One ``helm upgrade`` to the new tags, then the wait for the operator's roll."""
        values: dict[str, str] = {}
        images: dict[str, str] = {}
        if image_tag:
            values["image.tag"] = image_tag
            images |= {service: f":{image_tag}" for service in SERVICES}
        if nats_tag:
            values["natsImage.tag"] = nats_tag
            images["nats"] = f":{nats_tag}"
        if not values:
            raise BackendError("upgrade on kind needs the new version: --upgrade-image-tag and/or --upgrade-nats-tag")
        started = time.monotonic()
        argv = self.helm_upgrade(release=release, chart=chart, values=values)
        running = self.wait_rolled(images)
        return {"helm": " ".join(argv), "rolled_in_s": round(time.monotonic() - started, 1), "running": running}

    def helm_upgrade(self, *, release: str, chart: str, values: Mapping[str, str]) -> list[str]:
        argv = ["helm", "upgrade", release, chart, "--namespace", self.namespace, "--kube-context", self.context, "--reuse-values"]
        for key, value in values.items():
            argv += ["--set", f"{key}={value}"]
        self._run(argv)
        return argv

    def workloads(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for kind, selector in (("statefulset", nats_selector(self.mesh)), ("deployment", services_selector(self.mesh))):
            doc = json.loads(self._kubectl("get", kind, "-n", self.namespace, "-l", selector, "-o", "json"))
            items.extend({"kind": "StatefulSet" if kind == "statefulset" else "Deployment", **i} for i in doc.get("items", []))
        return items

    def wait_rolled(self, images: Mapping[str, str]) -> dict[str, str]:
        """Until every NATS StatefulSet and service Deployment runs ``images`` (container -> image
        substring) on its latest revision with all pods ready and the mesh is Ready; returns
        workload -> the images it runs."""
        running: dict[str, str] = {}
        for attempt in range(self._attempts):
            items = self.workloads()
            running = {i["metadata"]["name"]: _images(i) for i in items}
            wanted = all(_runs(i, images) and rolled(i) for i in items)
            if items and wanted and mesh_ready(self.document()):
                return running
            if attempt + 1 < self._attempts:
                self._sleep(MESH_POLL_S)
        raise BackendError(f"the upgrade did not finish rolling: {running}")


def _containers(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(((item.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or [])


def _images(item: Mapping[str, Any]) -> str:
    return ",".join(f"{c.get('name')}={c.get('image')}" for c in _containers(item))


def _runs(item: Mapping[str, Any], images: Mapping[str, str]) -> bool:
    """Each container named in ``images`` (if the workload has it) runs an image containing its value."""
    return all(str(c.get("image", "")).endswith(images[c.get("name", "")]) for c in _containers(item) if c.get("name") in images)


def placements(documents: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """stream -> [leader, followers...] from ``/jsz?streams=true`` documents (server name -> document).

    Each stream's entry is its **leader's** view: a follower lists the *other*
    members (the leader among them, itself left out), and a server just removed
    from a stream may still report its last view of it, so reading whichever
    document came last gave ``[a, a, c]`` after a drain, the leader twice and the
    new replica missing. A stream whose leader did not answer falls back to a
    follower's view, completed with that follower itself.
    """
    docs = list(documents.items()) if isinstance(documents, Mapping) else [("", d) for d in documents]
    leader_view: dict[str, list[str]] = {}
    other_view: dict[str, list[str]] = {}
    for server, doc in docs:
        server = server or str(doc.get("server_name") or "")
        for account in doc.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                cluster = stream.get("cluster") or {}
                leader = cluster.get("leader")
                if not leader:
                    continue
                others = [str(r.get("name")) for r in cluster.get("replicas") or [] if r.get("name") != leader]
                if leader == server:
                    leader_view[stream["name"]] = [leader, *others]
                elif stream["name"] not in other_view:
                    other_view[stream["name"]] = [leader, *(n for n in others if n != server), *([server] if server else [])]
    return {**{k: v for k, v in other_view.items() if k not in leader_view}, **leader_view}
