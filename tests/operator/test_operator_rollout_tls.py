"""With TLS on, the certificate digest stamped into the NATS pod templates is part of the recorded
template hash: a settled mesh plans no roll (found on kind: region a was 'restarting' for ever and
held b and c, so a natsImage upgrade never got past the first region)."""

from __future__ import annotations

import copy

from xchat_operator import builders, certificates, rollout
from xchat_operator.probes import Check, RegionHealth
from xchat_operator.spec import SERVICE_NAMES, parse_mesh

PASSWORDS = {"auth": "pa", "keys": "pk", "relay": "pr", "mailbox": "pm", "route": "proute"}
SECRET = {"data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5", "ca.crt": "Y2E="}}


def _desired(tag: str) -> list[dict]:
    spec = parse_mesh({"metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 2},
                       "spec": {"regions": [{"name": r} for r in ("a", "b", "c")], "tls": {"enabled": True},
                                "natsImage": f"nats:{tag}"}})
    desired = builders.desired_objects(spec, PASSWORDS)
    certificates.stamp(desired, lambda _name: SECRET)
    return desired


def _applied(sts: dict) -> dict:
    cur = copy.deepcopy(sts)
    n = cur["spec"]["replicas"]
    cur["status"] = {"readyReplicas": n, "updatedReplicas": n, "currentRevision": "r", "updateRevision": "r"}
    return cur


def test_a_settled_tls_mesh_plans_no_roll_and_an_upgrade_rolls_one_region_then_the_next() -> None:
    spec = parse_mesh({"metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 2},
                       "spec": {"regions": [{"name": r} for r in ("a", "b", "c")], "tls": {"enabled": True}}})
    ok = Check(ok=True, reason="Healthy")
    health = {r: RegionHealth(region=r, nats=ok, services={s: ok for s in SERVICE_NAMES}) for r in ("a", "b", "c")}
    old = {o["metadata"]["name"]: o for o in _desired("2.15.1") if o["kind"] == "StatefulSet"}
    current = {name: _applied(sts) for name, sts in old.items()}
    plan = rollout.plan(spec, list(old.values()), current, health)
    assert plan.rolling == () and not plan.held
    new = [o for o in _desired("2.15.3") if o["kind"] == "StatefulSet"]
    first = rollout.plan(spec, new, current, health)
    assert first.rolling == ("a",) and set(first.held) == {"m-nats-b", "m-nats-c"}
    current["m-nats-a"] = _applied(next(o for o in new if o["metadata"]["name"] == "m-nats-a"))
    second = rollout.plan(spec, new, current, health)
    assert second.rolling == ("b",)  # a is done: the roll moves on
