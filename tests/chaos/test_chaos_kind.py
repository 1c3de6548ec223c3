"""The kind back end against a fake docker/kubectl command layer (no cluster, no docker)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from xchat_chaos.backend import BackendError
from xchat_chaos.kind import REGION_LABEL, KindBackend

NODES = {"a": ["xchat-worker", "xchat-worker4"], "b": ["xchat-worker2"], "c": ["xchat-worker3"]}
NATS_PODS = {"nats-0": "xchat-worker", "nats-1": "xchat-worker2", "nats-2": "xchat-worker3"}


def jsz(server: str, *, leader: str = "nats-0", stream_leader: str = "nats-1", lagging: str | None = None) -> dict:
    peers = [p for p in NATS_PODS if p != server]
    replicas = [{"name": p, "current": p != lagging, "active": 100_000_000, "lag": 5 if p == lagging else 0} for p in peers]
    return {
        "meta_cluster": {"leader": leader, "replicas": replicas if server == leader else []},
        "account_details": [
            {
                "stream_detail": [
                    {
                        "name": "XCHAT_MAILBOX",
                        "config": {"num_replicas": 3},
                        "cluster": {"leader": stream_leader, "replicas": replicas if server == stream_leader else []},
                    }
                ]
            }
        ],
    }


def routez(server: str) -> dict:
    return {"routes": [{"remote_name": p} for p in NATS_PODS if p != server]}


class FakeCommands:
    """Records every argv; answers kubectl queries from canned cluster state."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.unreachable: set[str] = set()
        self.lagging: str | None = None
        self.fail_on: set[str] = set()

    def __call__(self, argv: Sequence[str]) -> str:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "docker":
            if argv[1] in self.fail_on:
                raise BackendError(f"docker {argv[1]} failed")
            return ""
        assert argv[:3] == ["kubectl", "--context", "kind-test"], argv
        rest = argv[3:]
        if rest[:2] == ["get", "nodes"]:
            items = [
                {"metadata": {"name": n, "labels": {REGION_LABEL: r}}} for r, ns in NODES.items() for n in ns
            ]
            return json.dumps({"items": items})
        if rest[:2] == ["get", "pods"]:
            selector = rest[rest.index("-l") + 1]
            if "nats" in selector:
                items = [
                    {"metadata": {"name": p}, "spec": {"nodeName": n}, "status": {"phase": "Running"}}
                    for p, n in NATS_PODS.items()
                ]
            else:
                items = [
                    {"metadata": {"name": f"svc-{r}"}, "spec": {"nodeName": ns[0]}, "status": {"phase": "Running"}}
                    for r, ns in NODES.items()
                ]
            return json.dumps({"items": items})
        if rest[0] == "exec":
            pod = rest[3]
            if pod in self.unreachable:
                raise BackendError("exec failed")
            url = rest[-1]
            if "/routez" in url:
                return json.dumps(routez(pod))
            if "/jsz" in url:
                return json.dumps(jsz(pod, lagging=self.lagging))
            return ""
        if rest[0] in ("wait", "delete"):
            return ""
        raise AssertionError(f"unexpected command {argv}")


@pytest.fixture
def fake() -> FakeCommands:
    return FakeCommands()


@pytest.fixture
def kind(fake: FakeCommands) -> KindBackend:
    endpoints = {"a": "10.0.0.1:30051", "b": "10.0.0.2:30051", "c": "10.0.0.3:30051"}
    return KindBackend(context="kind-test", namespace="xchat", endpoints=endpoints, runner=fake, sleep=lambda _s: None)


def docker_calls(fake: FakeCommands) -> list[list[str]]:
    return [c for c in fake.calls if c[0] == "docker"]


def test_regions_and_nodes_come_from_the_region_label(kind: KindBackend) -> None:
    assert kind.regions == ("a", "b", "c")
    assert kind.nodes("a") == ["xchat-worker", "xchat-worker4"]


def test_endpoints_put_the_home_region_first(kind: KindBackend) -> None:
    assert kind.endpoints("b") == ["10.0.0.2:30051", "10.0.0.1:30051", "10.0.0.3:30051"]


def test_start_requires_an_endpoint_per_region(fake: FakeCommands) -> None:
    backend = KindBackend(context="kind-test", endpoints={"a": "x:1"}, runner=fake)
    with pytest.raises(BackendError, match="no gRPC endpoint"):
        backend.start()


def test_kill_region_kills_every_node_of_the_region(kind: KindBackend, fake: FakeCommands) -> None:
    kind.kill_region("a")
    assert docker_calls(fake) == [
        ["docker", "kill", "--signal", "KILL", "xchat-worker"],
        ["docker", "kill", "--signal", "KILL", "xchat-worker4"],
    ]


def test_restore_region_starts_nodes_and_waits_for_readiness(kind: KindBackend, fake: FakeCommands) -> None:
    kind.restore_region("c")
    assert ["docker", "start", "xchat-worker3"] in fake.calls
    waits = [c for c in fake.calls if "wait" in c]
    assert any("node/xchat-worker3" in c for c in waits)
    assert any("app.kubernetes.io/name=nats" in c for c in waits)


def test_freeze_and_thaw_pause_the_nodes(kind: KindBackend, fake: FakeCommands) -> None:
    kind.freeze_region("b")
    kind.thaw_region("b")
    assert docker_calls(fake) == [["docker", "pause", "xchat-worker2"], ["docker", "unpause", "xchat-worker2"]]


def test_partition_disconnects_the_region_from_the_kind_network(kind: KindBackend, fake: FakeCommands) -> None:
    kind.partition_region("c")
    kind.heal_region("c")
    assert docker_calls(fake) == [
        ["docker", "network", "disconnect", "kind", "xchat-worker3"],
        ["docker", "network", "connect", "kind", "xchat-worker3"],
    ]


def test_latency_is_netem_on_every_node(kind: KindBackend, fake: FakeCommands) -> None:
    kind.add_latency(40)
    kind.clear_latency()
    calls = docker_calls(fake)
    assert len(calls) == 8
    assert calls[0] == ["docker", "exec", "xchat-worker", "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "40ms"]
    assert calls[-1][-4:] == ["del", "dev", "eth0", "root"]


def test_node_loss_and_rolling_restart(kind: KindBackend, fake: FakeCommands) -> None:
    kind.kill_node("xchat-worker4")
    kind.start_node("xchat-worker4")
    kind.restart_node("xchat-worker2")
    kind.restart_services("a")
    deletes = [c[-2] for c in fake.calls if "delete" in c]
    assert deletes == ["nats-1", "svc-a"]
    assert ["docker", "kill", "--signal", "KILL", "xchat-worker4"] in fake.calls


def test_topology_maps_leaders_to_regions(kind: KindBackend) -> None:
    topo = kind.topology()
    assert topo.meta_leader == "nats-0" and topo.meta_leader_region == "a"
    assert topo.mailbox_leader_region == "b"


def test_redundancy_full_then_lagging_then_unreachable(kind: KindBackend, fake: FakeCommands) -> None:
    assert kind.redundancy().ok
    fake.lagging = "nats-2"
    state = kind.redundancy()
    assert not state.ok and any("followers current" in p for p in state.problems)
    fake.lagging = None
    fake.unreachable = {"nats-2"}
    state = kind.redundancy()
    assert not state.ok and any("nats-2 not answering" in p for p in state.problems)


def test_stop_undoes_faults_and_tolerates_errors(kind: KindBackend, fake: FakeCommands) -> None:
    fake.fail_on = {"unpause"}
    kind.stop()
    verbs = {c[1] for c in docker_calls(fake)}
    assert verbs == {"unpause", "start", "network"}


def test_prefer_leader_is_best_effort(kind: KindBackend, fake: FakeCommands) -> None:
    fake.unreachable = {"nats-0"}
    kind.prefer_leader("XCHAT_MAILBOX", "c")  # exec fails: no exception
    assert any("$JS.API.STREAM.LEADER.STEPDOWN.XCHAT_MAILBOX" in c for c in fake.calls)


def test_scenarios_run_unchanged_on_kind(kind: KindBackend, fake: FakeCommands) -> None:
    """The scenario layer only uses the Backend interface: check kind provides all of it."""
    from xchat_chaos.backend import Backend

    members = [m for m in Backend.__dict__ if not m.startswith("_")]
    missing = [m for m in members if not hasattr(kind, m)]
    assert missing == []
