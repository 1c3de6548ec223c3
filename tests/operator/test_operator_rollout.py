"""Unit tests of the rollout plan, the safety refusals and the cluster-wide NATS budget (no API server)."""

from __future__ import annotations

import copy

import pytest

from xchat_operator import builders, names, rollout, safety
from xchat_operator.probes import Check, RegionHealth
from xchat_operator.spec import SERVICE_NAMES, parse_mesh

PASSWORDS = {"auth": "pa", "keys": "pk", "relay": "pr", "mailbox": "pm", "route": "proute"}
REGIONS = ("eu", "us", "ap")


def spec_of(**overrides: object):
    spec = {"regions": [{"name": r} for r in REGIONS], **overrides}
    return parse_mesh({"metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 2}, "spec": spec})


def statefulsets(spec) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in builders.desired_objects(spec, PASSWORDS) if o["kind"] == "StatefulSet"}


def running(sts: dict, *, ready: bool = True) -> dict:
    """What the API server returns once the StatefulSet controller has (or has not) rolled it out."""
    cur = copy.deepcopy(sts)
    cur["metadata"]["generation"] = 4
    n = cur["spec"]["replicas"]
    cur["status"] = {"observedGeneration": 4, "readyReplicas": n if ready else 0, "updatedReplicas": n,
                     "currentRevision": "r1", "updateRevision": "r1"}
    return cur


def healthy(ok: bool = True, reason: str = "Serving") -> dict[str, RegionHealth]:
    c = Check(ok=ok, reason=reason)
    return {r: RegionHealth(region=r, nats=c, services={s: c for s in SERVICE_NAMES}) for r in REGIONS}


def plan(spec, current: dict[str, dict | None], health=None) -> rollout.Plan:
    return rollout.plan(spec, builders.desired_objects(spec, PASSWORDS), current, health or {})


def test_image_change_rolls_one_region_per_pass_and_waits_for_it() -> None:
    old, new = spec_of(natsImage="nats:2.12.3"), spec_of(natsImage="nats:2.12.4")
    current = {name: running(sts) for name, sts in statefulsets(old).items()}
    first = plan(new, current, healthy())
    assert first.rolling == ("eu",)
    assert set(first.held) == {"m-nats-us", "m-nats-ap"}
    assert "one region at a time" in first.held["m-nats-us"]
    # eu was applied: the controller has not finished it yet, so us and ap keep waiting.
    current["m-nats-eu"] = running(statefulsets(new)["m-nats-eu"], ready=False)
    second = plan(new, current, healthy())
    assert second.rolling == () and set(second.held) == {"m-nats-us", "m-nats-ap"}
    assert "m-nats-eu" not in second.held and "region eu's NATS pods are not all updated and ready" in second.message
    # eu is ready and probed healthy: the next region goes.
    current["m-nats-eu"] = running(statefulsets(new)["m-nats-eu"])
    assert plan(new, current, healthy()).rolling == ("us",)


def test_unhealthy_probe_holds_the_next_region() -> None:
    old, new = spec_of(natsImage="nats:2.12.3"), spec_of(natsImage="nats:2.12.4")
    current = {name: running(sts) for name, sts in statefulsets(old).items()}
    current["m-nats-eu"] = running(statefulsets(new)["m-nats-eu"])
    health = healthy()
    health["eu"] = RegionHealth(region="eu", nats=Check(ok=False, reason="Unreachable"), services={})
    out = plan(new, current, health)
    assert out.rolling == () and "region eu's NATS is unhealthy (Unreachable)" in out.held["m-nats-us"]
    # Disabled probes say nothing about health: only the StatefulSets count.
    assert plan(new, current, healthy(ok=False, reason="NotProbed")).rolling == ("us",)


def test_an_unavailable_region_may_be_fixed_but_blocks_the_others() -> None:
    old, new = spec_of(natsImage="nats:2.12.3"), spec_of(natsImage="nats:2.12.4")
    current = {name: running(sts) for name, sts in statefulsets(old).items()}
    current["m-nats-us"] = running(statefulsets(old)["m-nats-us"], ready=False)  # e.g. crash-looping
    out = plan(new, current, healthy())
    assert out.rolling == () and set(out.held) == {"m-nats-eu", "m-nats-ap"}
    assert "m-nats-us" not in out.held  # applying the fix to the broken region is always allowed


def test_down_region_blocks_rolls_elsewhere() -> None:
    old = spec_of(natsImage="nats:2.12.3", regions=[{"name": "eu"}, {"name": "us", "down": True}, {"name": "ap"}])
    new = spec_of(natsImage="nats:2.12.4", regions=[{"name": "eu"}, {"name": "us", "down": True}, {"name": "ap"}])
    current = {name: running(sts) for name, sts in statefulsets(old).items()}
    out = plan(new, current, healthy())
    assert set(out.held) == {"m-nats-eu", "m-nats-ap"} and "region us is marked down" in out.message


def test_new_regions_scale_changes_and_unchanged_templates_are_never_held() -> None:
    spec = spec_of()
    assert plan(spec, {name: None for name in statefulsets(spec)}, {}).held == {}
    current = {name: running(sts) for name, sts in statefulsets(spec).items()}
    assert plan(spec, current, healthy()).held == {}
    drained = spec_of(regions=[{"name": "eu"}, {"name": "us"}, {"name": "ap", "mode": "Drained"}])
    assert plan(drained, current, healthy()).held == {}  # replicas 1 -> 0 restarts nothing


def test_template_hash_is_stamped_and_follows_the_template() -> None:
    a, b = statefulsets(spec_of(natsImage="nats:2.12.3")), statefulsets(spec_of(natsImage="nats:2.12.4"))
    ann = a["m-nats-eu"]["metadata"]["annotations"][rollout.TEMPLATE_HASH_ANNOTATION]
    assert ann == rollout.template_hash(a["m-nats-eu"]) != rollout.template_hash(b["m-nats-eu"])


def test_startup_probe_waits_for_jetstream_to_be_current() -> None:
    sts = statefulsets(spec_of())["m-nats-eu"]
    assert sts["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_one_budget_over_every_nats_pod() -> None:
    objs = builders.desired_objects(spec_of(), PASSWORDS)
    budgets = [o for o in objs if o["kind"] == "PodDisruptionBudget" and o["metadata"]["labels"][names.LABEL_COMPONENT] == "nats"]
    assert [b["metadata"]["name"] for b in budgets] == ["m-nats"]
    assert budgets[0]["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {names.LABEL_MESH: "m",
                                                                                    names.LABEL_COMPONENT: "nats"}}}


def test_endpoints_list_only_the_given_regions() -> None:
    cm = builders.endpoints_configmap(spec_of(), "cluster.local", listed=["eu", "ap"])
    assert cm["data"]["regions"] == "eu,ap" and "m-relay-us" not in cm["data"]["endpoints"]


@pytest.mark.parametrize(("image", "old"), [
    ("nats:2.12.2", True), ("nats:2.11.9-alpine", True), ("nats:2.10", True), ("r.local:5000/nats:v1.4.1", True),
    ("nats:2.12.3", False), ("nats:2.12-alpine", False), ("nats:2.13.0", False), ("nats:3", False),
    ("nats:latest", False), ("nats@sha256:" + "0" * 64, False), ("r.local:5000/nats:2.12.4", False),
])
def test_nats_version_floor(image: str, old: bool) -> None:
    assert safety.too_old(image) is old


def test_refusals_name_what_is_unsafe() -> None:
    assert safety.refusals(spec_of()) == []
    two_away = spec_of(regions=[{"name": "eu", "down": True}, {"name": "us", "mode": "Draining"}, {"name": "ap"}])
    (reason,) = safety.refusals(two_away)
    assert "regions eu, us are draining, drained or down at once" in reason and "at most 1" in reason
    assert "older than nats-server 2.12.3" in safety.refusals(spec_of(natsImage="nats:2.11.0"))[0]


def workloads(spec) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in builders.desired_objects(spec, PASSWORDS)
            if o["kind"] in ("StatefulSet", "Deployment")}


def deployed(obj: dict, *, ready: bool = True) -> dict:
    """A StatefulSet or Deployment as its controller reports it (rolled out, or still rolling)."""
    if obj["kind"] == "StatefulSet":
        return running(obj, ready=ready)
    cur = copy.deepcopy(obj)
    cur["metadata"]["generation"] = 4
    n = cur["spec"]["replicas"]
    # Rolling: the new pod surged and is not ready yet (maxUnavailable 0: the old ones still serve).
    cur["status"] = ({"observedGeneration": 4, "replicas": n, "readyReplicas": n, "updatedReplicas": n} if ready
                     else {"observedGeneration": 4, "replicas": n + 1, "readyReplicas": n, "updatedReplicas": 1})
    return cur


def test_services_roll_region_by_region_after_their_own_nats() -> None:
    """An upgrade of both images: per region NATS, then its four services, then the next region;
    never two regions, never a region's NATS and its services at once."""
    old = spec_of(image="xchat:1", natsImage="nats:2.12.3")
    new = spec_of(image="xchat:2", natsImage="nats:2.12.4")
    current = {name: deployed(o) for name, o in workloads(old).items()}
    want = workloads(new)
    services = {r: [f"m-{s}-{r}" for s in SERVICE_NAMES] for r in REGIONS}
    order: list[tuple[str, str]] = []
    for _ in range(20):
        p = rollout.plan(new, builders.desired_objects(new, PASSWORDS), current, healthy())
        applied = [n for n in want if n not in p.held
                   and current[n]["metadata"]["annotations"][rollout.TEMPLATE_HASH_ANNOTATION]
                   != want[n]["metadata"]["annotations"][rollout.TEMPLATE_HASH_ANNOTATION]]
        if not applied:
            break
        regions = {n.rsplit("-", 1)[1] for n in applied}
        assert len(regions) == 1, f"two regions restart in one pass: {applied}"
        (region,) = regions
        nats = f"m-nats-{region}"
        if nats in applied:
            assert p.rolling == (region,) and not set(applied) & set(services[region]), applied
            assert all("NATS restarts first" in p.held[d] for d in services[region] if d in p.held)
            order.append((region, "nats"))
        else:
            assert sorted(applied) == sorted(services[region]) and p.services_rolling == (region,)
            order.append((region, "services"))
        # The controller starts on it: not settled in the next pass, which holds everything else.
        for n in applied:
            current[n] = deployed(want[n], ready=False)
        again = rollout.plan(new, builders.desired_objects(new, PASSWORDS), current, healthy())
        assert again.rolling == () and again.services_rolling == ()
        assert all(n in again.held for n in want if n not in applied and n in p.held)
        for n in applied:
            current[n] = deployed(want[n])
    assert order == [(r, step) for r in REGIONS for step in ("nats", "services")]


def test_a_region_with_its_services_rolling_holds_every_other_regions_nats() -> None:
    old, new = spec_of(natsImage="nats:2.12.3"), spec_of(natsImage="nats:2.12.4")
    current = {name: deployed(o) for name, o in workloads(old).items()}
    current["m-relay-eu"] = deployed(workloads(old)["m-relay-eu"], ready=False)  # still rolling (or stuck)
    p = rollout.plan(new, builders.desired_objects(new, PASSWORDS), current, healthy())
    # eu's NATS may go (its region is already not fully serving), us and ap wait for eu.
    assert p.rolling == ("eu",)
    assert set(p.held) == {"m-nats-us", "m-nats-ap"}
    assert "region eu's services relay are not all updated and ready" in p.held["m-nats-us"]
