"""scale-region and upgrade on the kind back end, against a fake kubectl/helm and a simulated operator.

The fake keeps one XChatMesh document; ``kubectl patch --type json`` applies the
ops (``test`` included, so a patch aimed at a moved region fails as on the API
server) and the "operator" catches up with the spec a few polls later. A helm
upgrade changes the images of the workloads and the operator rolls one region
per poll.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import pytest

from xchat_chaos.backend import BackendError
from xchat_chaos.kind import KindBackend
from xchat_chaos.kind_commands import REGION_LABEL
from xchat_chaos.kind_mesh import ready_by_workloads

NODES = {"a": "w1", "b": "w2", "c": "w3", "d": "w4"}
LAG = 2  # polls before the simulated operator reports a spec change


def _status_entry(name: str, mode: str, ready: bool) -> dict[str, Any]:
    reason = {"Active": "Active", "Draining": "ReplicasMoved", "Drained": "NatsScaledDown"}[mode]
    return {
        "name": name,
        "mode": mode,
        "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"},
            {"type": "Draining", "status": "False" if mode == "Active" else "True", "reason": reason},
        ],
    }


def _workload(kind: str, name: str, region: str, container: str, image: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": 1, "labels": {"xchat.dev/region": region}},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": container, "image": image}]}}},
        "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                   **({"currentRevision": "r1", "updateRevision": "r1"} if kind == "statefulset" else {})},
    }


class FakeCluster:
    def __init__(self, *, operator_stuck: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.sleeps = 0
        self.operator_stuck = operator_stuck
        self.generation = 1
        self.spec: dict[str, Any] = {
            "name": "xchat", "tls": {"enabled": False},
            "regions": [{"name": r, "natsNodes": 1, "storage": {"size": "1Gi"}} for r in ("a", "b", "c")],
        }
        self.observed = copy.deepcopy(self.spec)
        self.pending_polls = 0
        self.images = {"nats": "xchat-nats:2.15.1", "relay": "xchat:0.1.0"}
        self.rolled_to: dict[str, dict[str, str]] = {}  # region -> images its pods run once rolled
        self.rolling: list[str] = []  # regions the operator still has to roll, in order
        self.ready_history: list[int] = []

    # -- the simulated operator -----------------------------------------
    def workloads(self, kind: str) -> list[dict[str, Any]]:
        out = []
        for region in self.observed["regions"]:
            name, mode = region["name"], region.get("mode", "Active")
            running = self.rolled_to.get(name, self.images)
            if kind == "statefulset":
                item = _workload(kind, f"xchat-nats-{name}", name, "nats", self.images["nats"])
                item["spec"]["replicas"] = 0 if mode == "Drained" else 1
                ready = 0 if mode == "Drained" or name == self._unready else 1
            else:
                item = _workload(kind, f"xchat-relay-{name}", name, "relay", self.images["relay"])
                item["spec"]["replicas"] = 1 if mode == "Active" else 0
                ready = 1 if mode == "Active" and name != self._unready else 0
            item["status"]["readyReplicas"] = ready
            if running != self.images:  # the template changed, its pods not yet replaced
                item["metadata"]["generation"] = 2
                item["status"]["updateRevision"] = "r2"
            out.append(item)
        return out

    def _tick(self) -> None:
        if self.operator_stuck:
            return
        if self.pending_polls > 0:
            self.pending_polls -= 1
            if self.pending_polls == 0:
                self.observed = copy.deepcopy(self.spec)
        if self.rolling:
            self.rolled_to.pop(self.rolling.pop(0), None)  # that region now runs the new images
            self._unready = self.rolling[0] if self.rolling else None
        self.ready_history.append(len(ready_by_workloads(
            [{"kind": "StatefulSet", **i} for i in self.workloads("statefulset")]
            + [{"kind": "Deployment", **i} for i in self.workloads("deployment")],
            [r["name"] for r in self.observed["regions"]],
        )))

    _unready: str | None = None

    def mesh(self) -> dict[str, Any]:
        regions = [
            _status_entry(r["name"], r.get("mode", "Active"), r.get("mode", "Active") == "Active" and r["name"] != self._unready)
            for r in self.observed["regions"]
        ]
        serving = [r for r in regions if r["mode"] == "Active"]
        ready = [r for r in serving if r["conditions"][0]["status"] == "True"]
        all_ready = len(ready) == len(serving) and not self.rolling
        return {
            "metadata": {"name": "xchat", "generation": self.generation},
            "spec": copy.deepcopy(self.spec),
            "status": {
                "observedGeneration": self.generation if self.pending_polls == 0 and not self.operator_stuck else self.generation - 1,
                "phase": "Running" if all_ready else "Degraded",
                "readyRegions": f"{len(ready)}/{len(serving)}",
                "regions": regions,
                "conditions": [
                    {"type": "Ready", "status": "True" if all_ready else "False"},
                    {"type": "RollingOut", "status": "True" if self.rolling else "False"},
                ],
            },
        }

    def _apply(self, ops: list[dict[str, Any]]) -> None:
        spec = copy.deepcopy(self.spec)
        for op in ops:
            parts = op["path"].split("/")[2:]  # /spec/regions/...
            assert parts[0] == "regions", op
            if op["op"] == "test":
                if spec["regions"][int(parts[1])][parts[2]] != op["value"]:
                    raise BackendError("The request is invalid: the server rejected our request due to an error in our request (test failed)")
            elif op["op"] == "add" and parts[1] == "-":
                spec["regions"].append(op["value"])
            elif op["op"] == "replace":
                spec["regions"][int(parts[1])][parts[2]] = op["value"]
            elif op["op"] == "remove":
                del spec["regions"][int(parts[1])]
            else:
                raise AssertionError(op)
        self.spec = spec
        self.generation += 1
        self.pending_polls = LAG

    def _helm(self, argv: list[str]) -> None:
        sets = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--set")
        old = dict(self.images)
        if "natsImage.tag" in sets:
            self.images["nats"] = "xchat-nats:" + sets["natsImage.tag"]
        if "image.tag" in sets:
            self.images["relay"] = "xchat:" + sets["image.tag"]
        self.rolled_to = {r["name"]: old for r in self.observed["regions"]}
        self.rolling = [r["name"] for r in self.observed["regions"]]
        self._unready = self.rolling[0]

    def __call__(self, argv: Sequence[str]) -> str:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "helm":
            self._helm(argv)
            return ""
        assert argv[:3] == ["kubectl", "--context", "kind-test"], argv
        rest = argv[3:]
        if rest[:2] == ["get", "nodes"]:
            items = [{"metadata": {"name": n, "labels": {REGION_LABEL: r}}, "status": {}} for r, n in NODES.items()]
            return json.dumps({"items": items})
        if rest[:2] == ["get", "xchatmesh"]:
            self._tick()
            return json.dumps(self.mesh())
        if rest[0] == "patch":
            self._apply(json.loads(rest[rest.index("-p") + 1]))
            return ""
        if rest[:2] in (["get", "statefulset"], ["get", "deployment"]):
            if rest[1] == "statefulset":
                self._tick()  # time passes between polls, whatever they read
            return json.dumps({"items": self.workloads(rest[1])})
        if rest[:2] == ["get", "pods"]:
            return json.dumps({"items": []})
        raise AssertionError(f"unexpected command {argv}")


def backend(cluster: FakeCluster, **kwargs: Any) -> KindBackend:
    kind = KindBackend(
        context="kind-test", endpoints={r: f"h:{i}" for i, r in enumerate("abcd")}, runner=cluster,
        sleep=lambda _s: setattr(cluster, "sleeps", cluster.sleeps + 1), **kwargs,
    )
    kind.start()
    return kind


def patches(cluster: FakeCluster) -> list[list[dict[str, Any]]]:
    return [json.loads(c[c.index("-p") + 1]) for c in cluster.calls if "patch" in c]


def test_a_labelled_node_of_a_region_the_mesh_lacks_is_not_a_drill_region() -> None:
    cluster = FakeCluster()
    assert backend(cluster).regions == ("a", "b", "c")


def test_add_region_appends_a_copy_of_the_first_region_and_waits_for_it_ready() -> None:
    cluster = FakeCluster()
    kind = backend(cluster)
    kind.add_region("d")
    assert patches(cluster) == [[{"op": "add", "path": "/spec/regions/-", "value": {"name": "d", "natsNodes": 1, "storage": {"size": "1Gi"}}}]]
    assert cluster.sleeps >= LAG - 1  # it waited for the operator, not just for the patch
    assert kind.regions == ("a", "b", "c", "d")
    assert "d" in kind.ready_regions()


def test_a_new_region_is_pinned_to_its_own_nodes_like_the_charts_regions() -> None:
    cluster = FakeCluster()
    for r in cluster.spec["regions"]:
        r["nodeSelector"] = {REGION_LABEL: r["name"], "pool": "mesh"}
    backend(cluster).add_region("d")
    (added,) = [op["value"] for ops in patches(cluster) for op in ops if op["op"] == "add"]
    assert added["nodeSelector"] == {REGION_LABEL: "d", "pool": "mesh"}


def test_add_region_without_a_node_for_it_is_refused_before_any_edit() -> None:
    cluster = FakeCluster()
    kind = backend(cluster)
    with pytest.raises(BackendError, match="no kind node is labelled topology.kubernetes.io/region=e"):
        kind.add_region("e")
    assert patches(cluster) == []


def test_drain_is_draining_remove_is_drained_then_gone_each_guarded_by_the_region_name() -> None:
    """Drain: clients leave and the operator moves the replicas (NATS still runs, as the
    local drain); remove: NATS scaled to 0, then the entry deleted (the local remove)."""
    cluster = FakeCluster()
    kind = backend(cluster)
    kind.add_region("d")
    kind.drain_region("a")
    assert patches(cluster)[1:] == [
        [{"op": "test", "path": "/spec/regions/0/name", "value": "a"}, {"op": "replace", "path": "/spec/regions/0/mode", "value": "Draining"}],
    ]
    kind.remove_region("a")
    assert patches(cluster)[2:] == [
        [{"op": "test", "path": "/spec/regions/0/name", "value": "a"}, {"op": "replace", "path": "/spec/regions/0/mode", "value": "Drained"}],
        [{"op": "test", "path": "/spec/regions/0/name", "value": "a"}, {"op": "remove", "path": "/spec/regions/0"}],
    ]
    assert kind.regions == ("b", "c", "d")
    assert sorted(kind.ready_regions()) == ["b", "c", "d"]


def test_a_region_moved_by_a_concurrent_edit_is_not_drained() -> None:
    """Another edit between reading the index and patching: the JSON-patch test fails the whole patch."""
    cluster = FakeCluster()
    kind = backend(cluster)
    real_index = kind.editor._index
    kind.editor._index = lambda region: real_index(region) + 1  # type: ignore[method-assign]
    with pytest.raises(BackendError, match="test failed"):
        kind.drain_region("a")
    assert all(r.get("mode", "Active") == "Active" for r in cluster.spec["regions"])


def test_an_operator_that_never_reports_fails_the_step_with_the_mesh_status() -> None:
    cluster = FakeCluster(operator_stuck=True)
    kind = backend(cluster)
    with pytest.raises(BackendError, match=r"timed out waiting for region d to be ready.*readyRegions"):
        kind.add_region("d")
    assert 0 < cluster.sleeps < 200  # bounded


def test_upgrade_is_one_helm_upgrade_then_waits_for_the_operators_roll() -> None:
    cluster = FakeCluster()
    kind = backend(cluster, upgrade_image_tag="0.2.0", upgrade_nats_tag="2.15.2", release="rel", chart="/c/xchat")
    assert kind.upgrade_plan() == [None]
    cluster.ready_history.clear()
    result = kind.upgrade(None)
    helm = [c for c in cluster.calls if c[0] == "helm"]
    assert helm == [[
        "helm", "upgrade", "rel", "/c/xchat", "--namespace", "xchat", "--kube-context", "kind-test", "--reuse-values",
        "--set", "image.tag=0.2.0", "--set", "natsImage.tag=2.15.2",
    ]]
    assert result["running"]["xchat-nats-c"] == "nats=xchat-nats:2.15.2"
    assert result["running"]["xchat-relay-a"] == "relay=xchat:0.2.0"
    # It returned only once every region rolled; the fake operator kept two ready throughout.
    assert not cluster.rolling and min(cluster.ready_history) == 2


def test_upgrade_without_a_new_version_is_refused() -> None:
    kind = backend(FakeCluster())
    with pytest.raises(BackendError, match="--upgrade-image-tag"):
        kind.upgrade(None)


def test_ready_regions_come_from_the_pods_not_the_operators_last_probe() -> None:
    def item(kind: str, region: str, want: int, ready: int) -> dict[str, Any]:
        return {"kind": kind, "metadata": {"labels": {"xchat.dev/region": region}},
                "spec": {"replicas": want}, "status": {"readyReplicas": ready}}

    items = [
        item("StatefulSet", "a", 1, 1), item("Deployment", "a", 1, 1), item("Deployment", "a", 2, 1),
        item("StatefulSet", "b", 1, 0), item("Deployment", "b", 1, 1),  # NATS restarting
        item("StatefulSet", "c", 1, 1), item("Deployment", "c", 1, 0),  # a service with no ready pod
        item("StatefulSet", "d", 0, 0), item("Deployment", "d", 0, 0),  # drained
    ]
    assert ready_by_workloads(items, ["a", "b", "c", "d"]) == ["a"]


def _jsz(leader: str, replicas: list[str]) -> dict[str, Any]:
    return {"account_details": [{"stream_detail": [
        {"name": "XCHAT_MAILBOX", "cluster": {"leader": leader, "replicas": [{"name": r} for r in replicas]}}]}]}


def test_placements_are_read_from_each_streams_leader() -> None:
    """After draining b the leader (a) lists its followers c and d; a follower (d) lists the
    others, the leader among them and itself left out, and b, removed from the group, still
    reports its last view. The leader's view wins, whatever order the documents come in
    (the drill reported ``[a, a, c]`` reading whichever came last)."""
    from xchat_chaos.kind_mesh import placements

    docs = {
        "xchat-nats-a-0": _jsz("xchat-nats-a-0", ["xchat-nats-c-0", "xchat-nats-d-0"]),
        "xchat-nats-b-0": _jsz("xchat-nats-a-0", ["xchat-nats-a-0", "xchat-nats-c-0"]),
        "xchat-nats-d-0": _jsz("xchat-nats-a-0", ["xchat-nats-a-0", "xchat-nats-c-0"]),
    }
    want = {"XCHAT_MAILBOX": ["xchat-nats-a-0", "xchat-nats-c-0", "xchat-nats-d-0"]}
    assert placements(docs) == want
    assert placements(dict(reversed(list(docs.items())))) == want
    # Without the leader's document: a follower's view, completed with the follower itself.
    only_d = {"xchat-nats-d-0": docs["xchat-nats-d-0"]}
    assert placements(only_d) == {"XCHAT_MAILBOX": ["xchat-nats-a-0", "xchat-nats-c-0", "xchat-nats-d-0"]}
