"""What the operator's pods expose to Prometheus: a metrics port on every service pod, the NATS exporter sidecar."""

from __future__ import annotations

from xchat_operator import builders
from xchat_operator.spec import parse_mesh

PASSWORDS = {"auth": "p1", "keys": "p2", "relay": "p3", "mailbox": "p4", "bootstrap": "p5", "route": "p6"}


def _objects(**spec: object) -> list[dict]:
    body = {"metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {"regions": [{"name": "eu"}, {"name": "us"}, {"name": "ap"}], **spec}}
    return builders.desired_objects(parse_mesh(body), PASSWORDS)


def _one(objs: list[dict], kind: str, name: str) -> dict:
    found = builders.find(objs, kind, name)
    assert found is not None, f"{kind}/{name}"
    return found


def test_every_service_pod_serves_metrics_on_a_named_port() -> None:
    objs = _objects()
    for service in ("auth", "keys", "relay", "mailbox"):
        (container,) = _one(objs, "Deployment", f"m-{service}-eu")["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert ports["metrics"] == 9090 and env["XCHAT_METRICS_LISTEN"] == "0.0.0.0:9090"


def test_nats_exporter_is_opt_in_and_never_exports_connections() -> None:
    plain = _one(_objects(), "StatefulSet", "m-nats-eu")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in plain] == ["nats", "config-reloader"]
    objs = _objects(monitoring={"natsExporter": {"enabled": True, "image": "example/exporter:1"}})
    nats, _reloader, exporter = _one(objs, "StatefulSet", "m-nats-eu")["spec"]["template"]["spec"]["containers"]
    assert exporter["image"] == "example/exporter:1"
    assert exporter["ports"] == [{"name": "metrics", "containerPort": 7777}]
    assert exporter["args"][-1] == "http://localhost:8222" and not any("connz" in a for a in exporter["args"])
    assert exporter["securityContext"] == nats["securityContext"]
    policy = _one(objs, "NetworkPolicy", "m-nats")
    assert any(rule["ports"][0]["port"] == 7777 and "from" not in rule for rule in policy["spec"]["ingress"])


def test_log_format_and_level_reach_every_service_container() -> None:
    plain = _one(_objects(), "Deployment", "m-relay-us")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in plain["env"]}
    assert (env["XCHAT_LOG_FORMAT"], env["XCHAT_LOG_LEVEL"]) == ("text", "info")
    objs = _objects(logging={"format": "json", "level": "debug"})
    for service in ("auth", "keys", "relay", "mailbox"):
        (container,) = _one(objs, "Deployment", f"m-{service}-ap")["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert (env["XCHAT_LOG_FORMAT"], env["XCHAT_LOG_LEVEL"]) == ("json", "debug")
