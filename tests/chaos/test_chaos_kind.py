"""The kind back end against a fake docker/kubectl command layer (no cluster, no docker)."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable, Sequence

import pytest

from xchat_chaos.backend import BackendError
from xchat_chaos.forwarding import TcpForward
from xchat_chaos.kind import KindBackend
from xchat_chaos.kind_commands import NETEM_UNSUPPORTED, REGION_LABEL, SERVICES, parse_endpoints

NODES = {"a": ["xchat-worker", "xchat-worker4"], "b": ["xchat-worker2"], "c": ["xchat-worker3"]}
NATS_PODS = {"nats-0": "xchat-worker", "nats-1": "xchat-worker2", "nats-2": "xchat-worker3"}
NODE_IPS = {"xchat-worker": "172.18.0.5", "xchat-worker4": "172.18.0.6", "xchat-worker2": "172.18.0.3", "xchat-worker3": "172.18.0.4"}
CA_PEM = b"-----BEGIN CERTIFICATE-----\nmesh-ca\n-----END CERTIFICATE-----\n"
# The operator's pod labels (operator/xchat_operator/names.py).
NATS_SELECTOR = "app.kubernetes.io/name=xchat,xchat.dev/mesh=xchat,app.kubernetes.io/component=nats"
SERVICES_SELECTOR = "app.kubernetes.io/name=xchat,xchat.dev/mesh=xchat,app.kubernetes.io/component in (auth,keys,relay,mailbox)"


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
        self.tls = True
        self.applied: list[dict] = []
        self.netem = True

    def __call__(self, argv: Sequence[str]) -> str:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "docker":
            if argv[1] in self.fail_on:
                raise BackendError(f"docker {argv[1]} failed")
            if argv[1] == "exec" and "netem" in argv and not self.netem:
                raise BackendError("Error: Specified qdisc kind is unknown.")
            if argv[1] == "inspect":
                return NODE_IPS[argv[-1]] + " \n"
            return ""
        assert argv[:3] == ["kubectl", "--context", "kind-test"], argv
        rest = argv[3:]
        if rest[:2] == ["get", "nodes"]:
            items = [
                {
                    "metadata": {"name": n, "labels": {REGION_LABEL: r}},
                    "status": {"addresses": [{"type": "InternalIP", "address": NODE_IPS[n]}, {"type": "Hostname", "address": n}]},
                }
                for r, ns in NODES.items()
                for n in ns
            ]
            return json.dumps({"items": items})
        if rest[:2] == ["get", "pods"]:
            selector = rest[rest.index("-l") + 1]
            if selector == NATS_SELECTOR:
                items = [
                    {"metadata": {"name": p}, "spec": {"nodeName": n}, "status": {"phase": "Running"}}
                    for p, n in NATS_PODS.items()
                ]
            elif selector == SERVICES_SELECTOR:
                items = [
                    {"metadata": {"name": f"svc-{r}"}, "spec": {"nodeName": ns[0]}, "status": {"phase": "Running"}}
                    for r, ns in NODES.items()
                ]
            else:
                raise AssertionError(f"selector {selector!r} matches no pod the operator makes")
            return json.dumps({"items": items})
        if rest[:2] == ["get", "xchatmesh"]:
            assert rest[2:5] == ["-n", "xchat", "xchat"], rest
            return json.dumps({"spec": {"name": "xchat", "tls": {"enabled": self.tls}}})
        if rest[:2] == ["get", "secret"]:
            assert rest[2:5] == ["-n", "xchat", "xchat-tls"], rest
            return json.dumps({"data": {"ca.crt": base64.b64encode(CA_PEM).decode()}})
        if rest[0] == "apply":
            with open(rest[rest.index("-f") + 1]) as f:
                self.applied.extend(json.load(f)["items"])
            return ""
        if rest[:2] == ["get", "service"]:
            items = []
            for i, svc in enumerate(self.applied):
                items.append({**svc, "spec": {**svc["spec"], "ports": [{**svc["spec"]["ports"][0], "nodePort": 30000 + i}]}})
            return json.dumps({"items": items})
        if rest[0] == "exec":
            pod = rest[3]
            if pod in self.unreachable:
                raise BackendError("exec failed")
            url = rest[-1]
            if "/routez" in url or "/jsz" in url:
                # busybox nc, not wget (which crashes in the FROM-scratch NATS image)
                assert rest[rest.index("--") + 1 :][:2] == ["sh", "-c"] and "nc -w 3 127.0.0.1 8222" in rest[-3], rest
                doc = routez(pod) if "/routez" in url else jsz(pod, lagging=self.lagging)
                return "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + json.dumps(doc)
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


class FakeForward:
    """Stands in for TcpForward: records the target, hands out a loopback address."""

    opened: list[FakeForward] = []

    def __init__(self, target: Callable[[], tuple[str, int]]) -> None:
        self.target = target
        self.address = f"127.0.0.1:{40000 + len(FakeForward.opened)}"
        self.closed = False
        FakeForward.opened.append(self)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def exposing(fake: FakeCommands) -> KindBackend:
    """No endpoints given: the back end exposes the Services itself."""
    FakeForward.opened = []
    return KindBackend(context="kind-test", namespace="xchat", runner=fake, forwarder=FakeForward, sleep=lambda _s: None)


def test_regions_and_nodes_come_from_the_region_label(kind: KindBackend) -> None:
    assert kind.regions == ("a", "b", "c")
    assert kind.nodes("a") == ["xchat-worker", "xchat-worker4"]


def test_endpoints_put_the_home_region_first(kind: KindBackend) -> None:
    assert kind.endpoints("b") == ["10.0.0.2:30051", "10.0.0.1:30051", "10.0.0.3:30051"]


def test_start_requires_an_endpoint_per_region(fake: FakeCommands) -> None:
    backend = KindBackend(context="kind-test", endpoints={"a": "x:1"}, runner=fake)
    with pytest.raises(BackendError, match="no gRPC endpoint"):
        backend.start()


def test_start_reads_the_mesh_ca_from_the_tls_secret(kind: KindBackend, fake: FakeCommands) -> None:
    kind.start()
    assert kind.root_certificates == CA_PEM
    fake.tls = False
    plain = KindBackend(context="kind-test", endpoints={"a": "x:1", "b": "y:1", "c": "z:1"}, runner=fake)
    plain.start()
    assert plain.root_certificates is None


def test_a_given_ca_is_not_overridden(fake: FakeCommands) -> None:
    backend = KindBackend(
        context="kind-test", endpoints={"a": "x:1", "b": "y:1", "c": "z:1"}, root_certificates=b"mine", runner=fake
    )
    backend.start()
    assert backend.root_certificates == b"mine"
    assert not any("secret" in c for c in fake.calls)


def test_start_exposes_every_service_of_every_region(exposing: KindBackend, fake: FakeCommands) -> None:
    exposing.start()
    # One NodePort Service per (service, region), selecting the operator's pods.
    assert len(fake.applied) == 12
    auth_b = next(s for s in fake.applied if s["metadata"]["name"] == "xchat-drill-auth-b")
    assert auth_b["spec"]["type"] == "NodePort"
    assert auth_b["spec"]["selector"] == {
        "xchat.dev/mesh": "xchat", "app.kubernetes.io/component": "auth", "xchat.dev/region": "b"
    }
    assert auth_b["spec"]["ports"][0]["targetPort"] == "grpc"
    # Endpoints are per-service mappings on loopback, the home region first.
    eps = exposing.endpoints("b")
    assert len(eps) == 3 and all(set(e) == set(SERVICES) for e in eps)
    assert all(addr.startswith("127.0.0.1:") for e in eps for addr in e.values())
    assert len({addr for e in eps for addr in e.values()}) == 12
    # Region b's forwarders go to region b's node, at that Service's node port.
    forward = next(f for f in FakeForward.opened if f.address == eps[0]["auth"])
    port = 30000 + fake.applied.index(auth_b)
    assert forward.target() == ("172.18.0.3", port)
    # A region with two nodes is reached through its first one.
    assert next(f for f in FakeForward.opened if f.address == exposing.endpoints("a")[0]["keys"]).target()[0] == "172.18.0.5"


def test_stop_closes_forwarders_and_deletes_the_drill_services(exposing: KindBackend, fake: FakeCommands) -> None:
    exposing.start()
    exposing.stop()
    assert all(f.closed for f in FakeForward.opened) and len(FakeForward.opened) == 12
    deletes = [c for c in fake.calls if c[3:5] == ["delete", "service"]]
    assert deletes and "app.kubernetes.io/managed-by=xchat-drill,xchat.dev/mesh=xchat" in deletes[0]


def test_a_restored_region_is_looked_up_again(exposing: KindBackend, fake: FakeCommands) -> None:
    exposing.start()
    forward = next(f for f in FakeForward.opened if f.address == exposing.endpoints("c")[0]["relay"])
    NODE_IPS["xchat-worker3"] = "172.18.0.9"  # docker start gave the node another address
    try:
        exposing.kill_region("c")
        exposing.restore_region("c")
        assert forward.target()[0] == "172.18.0.9"
        assert ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "xchat-worker3"] in fake.calls
    finally:
        NODE_IPS["xchat-worker3"] = "172.18.0.4"


def test_parse_endpoints_per_region_or_per_service() -> None:
    assert parse_endpoints("a=h:1,b=h:2") == {"a": "h:1", "b": "h:2"}
    per = ",".join(f"a.{s}=h:{i}" for i, s in enumerate(SERVICES))
    assert parse_endpoints(per + ",b=h:9") == {"a": {s: f"h:{i}" for i, s in enumerate(SERVICES)}, "b": "h:9"}
    assert parse_endpoints("") == {}
    with pytest.raises(ValueError, match="lacks per-service"):
        parse_endpoints("a.auth=h:1")
    with pytest.raises(ValueError, match="unknown service"):
        parse_endpoints("a.chat=h:1")
    with pytest.raises(ValueError, match="expected region=host:port"):
        parse_endpoints("a")


def test_given_per_service_endpoints_are_passed_through(fake: FakeCommands) -> None:
    per = {s: f"10.0.0.1:{30000 + i}" for i, s in enumerate(SERVICES)}
    backend = KindBackend(context="kind-test", endpoints={"a": per, "b": "h:2", "c": "h:3"}, runner=fake)
    backend.start()
    assert backend.endpoints("a")[0] == per
    assert not any(c[3:4] == ["apply"] for c in fake.calls)


def test_tcp_forward_relays_and_closes() -> None:
    upstream = socket.create_server(("127.0.0.1", 0))
    port = upstream.getsockname()[1]

    def echo() -> None:
        conn, _ = upstream.accept()
        with conn:
            conn.sendall(conn.recv(100).upper())

    threading.Thread(target=echo, daemon=True).start()
    forward = TcpForward(lambda: ("127.0.0.1", port))
    try:
        host, fport = forward.address.rsplit(":", 1)
        with socket.create_connection((host, int(fport)), timeout=5) as c:
            c.sendall(b"hello")
            assert c.recv(100) == b"HELLO"
    finally:
        forward.close()
        upstream.close()


def test_tcp_forward_drops_clients_when_the_target_is_gone() -> None:
    dead = socket.create_server(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    forward = TcpForward(lambda: ("127.0.0.1", port), connect_timeout=1)
    try:
        host, fport = forward.address.rsplit(":", 1)
        with socket.create_connection((host, int(fport)), timeout=5) as c:
            c.settimeout(5)
            assert c.recv(100) == b""  # closed: gRPC sees UNAVAILABLE
    finally:
        forward.close()


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
    assert any(NATS_SELECTOR in c for c in waits)
    assert any(SERVICES_SELECTOR in c for c in waits)


def test_freeze_and_thaw_pause_the_nodes(kind: KindBackend, fake: FakeCommands) -> None:
    kind.freeze_region("b")
    kind.thaw_region("b")
    assert docker_calls(fake) == [["docker", "pause", "xchat-worker2"], ["docker", "unpause", "xchat-worker2"]]


def test_partition_disconnects_the_region_from_the_kind_network(kind: KindBackend, fake: FakeCommands) -> None:
    kind.partition_region("c")
    kind.heal_region("c")
    calls = docker_calls(fake)
    assert calls[:2] == [
        ["docker", "network", "disconnect", "kind", "xchat-worker3"],
        # back with the same address: the node's pods live in 10.244.<last octet>.0/24
        ["docker", "network", "connect", "--ip", "172.18.0.4", "kind", "xchat-worker3"],
    ]
    # docker names the new interface eth<N>: renamed to eth0, pod routes re-added by xchat-cni
    assert calls[2][:5] == ["docker", "exec", "xchat-worker3", "sh", "-c"]
    assert 'ip link set "$dev" name eth0' in calls[2][5] and "/usr/local/bin/xchat-cni" in calls[2][5]
    assert len(calls) == 3


def test_latency_is_netem_on_every_node(kind: KindBackend, fake: FakeCommands) -> None:
    kind.check_links()
    kind.add_latency(40)
    kind.clear_latency()
    calls = docker_calls(fake)[2:]
    assert len(calls) == 8
    assert calls[0] == ["docker", "exec", "xchat-worker", "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "40ms"]
    assert calls[-1][-4:] == ["del", "dev", "eth0", "root"]


def test_latency_without_netem_is_reported_as_unsupported(kind: KindBackend, fake: FakeCommands) -> None:
    fake.netem = False
    with pytest.raises(BackendError, match="unsupported on this kernel") as info:
        kind.check_links()
    assert NETEM_UNSUPPORTED in str(info.value) and "qdisc kind is unknown" in str(info.value)
    with pytest.raises(BackendError, match="unsupported on this kernel"):
        kind.add_latency(40)
    kind.clear_latency()  # nothing to undo: no error


def test_node_loss_and_rolling_restart(kind: KindBackend, fake: FakeCommands) -> None:
    kind.kill_node("xchat-worker4")
    kind.start_node("xchat-worker4")
    kind.restart_node("xchat-worker2")
    kind.restart_services("a")
    deletes = [c[-2] for c in fake.calls if "delete" in c]
    assert deletes == ["nats-1", "svc-a"]
    assert ["docker", "kill", "--signal", "KILL", "xchat-worker4"] in fake.calls


def test_node_loss_of_a_nats_server_kills_the_node_it_runs_on(kind: KindBackend, fake: FakeCommands) -> None:
    """node-loss names a NATS server (its pod); on kind that is the node container it runs on."""
    kind.kill_node("nats-1")
    kind.start_node("nats-1")
    kind.restart_node("nats-2")
    assert ["docker", "kill", "--signal", "KILL", "xchat-worker2"] in fake.calls
    assert ["docker", "start", "xchat-worker2"] in fake.calls
    assert [c[-2] for c in fake.calls if "delete" in c] == ["nats-2"]
    with pytest.raises(BackendError, match="neither a kind node nor a NATS pod"):
        kind.kill_node("nope")


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
    assert verbs == {"unpause", "start", "network", "exec"}
    fake.fail_on = {"network"}  # already connected: no relink either
    fake.calls.clear()
    kind.stop()
    assert {c[1] for c in docker_calls(fake)} == {"unpause", "start", "network"}


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


def test_cli_link_latency_on_kind_without_netem_says_unsupported(
    fake: FakeCommands, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    """`xchat drill link-latency --backend kind` stops before any traffic, with a clear message and status 2."""
    import argparse

    from xchat_chaos import cli, kind as kind_module

    fake.netem = False
    real = kind_module.KindBackend

    def backend(**kwargs: object) -> KindBackend:
        assert kwargs["endpoints"] == {"a": "h:1", "b": "h:2", "c": "h:3"}
        return real(**{**kwargs, "context": "kind-test", "runner": fake})  # type: ignore[arg-type]

    monkeypatch.setattr(kind_module, "KindBackend", backend)
    parser = argparse.ArgumentParser()
    cli.add_drill_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["drill", "link-latency", "--backend", "kind", "--endpoints", "a=h:1,b=h:2,c=h:3", "--out", str(tmp_path / "r"), "--no-progress"]
    )
    assert args.run(args) == 2
    err = capsys.readouterr().err
    assert "cannot run" in err and "unsupported on this kernel" in err
    assert not (tmp_path / "r").exists()


def test_http_body_needs_a_200() -> None:
    from xchat_chaos.kind_commands import http_body

    assert http_body('HTTP/1.0 200 OK\r\nA: b\r\n\r\n{"x": 1}') == '{"x": 1}'
    with pytest.raises(ValueError, match="503"):
        http_body("HTTP/1.0 503 Service Unavailable\r\n\r\n{}")
    with pytest.raises(ValueError):
        http_body("")
