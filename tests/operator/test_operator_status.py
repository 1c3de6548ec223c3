"""Unit tests of status computation, probes (injected), settings and the public surface."""

from __future__ import annotations

import asyncio

import xchat_operator
from xchat_operator import probes, settings, status
from xchat_operator.spec import SERVICE_NAMES, parse_mesh


def spec_of(regions: list[dict], annotations: dict | None = None):
    return parse_mesh({"metadata": {"name": "m", "namespace": "ns", "generation": 7, "annotations": annotations or {}},
                       "spec": {"regions": regions}})


def health(region: str, nats: bool = True, services: bool = True) -> probes.RegionHealth:
    ok = probes.Check(ok=True, reason="Serving")
    bad = probes.Check(ok=False, reason="Unreachable")
    return probes.RegionHealth(region=region, nats=ok if nats else bad,
                               services={s: ok if services else bad for s in SERVICE_NAMES})


def conds(region_status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in region_status["conditions"]}


REGIONS = [{"name": "a"}, {"name": "b"}, {"name": "c"}]


def test_all_ready_running() -> None:
    st = status.mesh_status(spec_of(REGIONS), {r: health(r) for r in "abc"})
    assert st["phase"] == "Running" and st["readyRegions"] == "3/3"
    assert st["observedGeneration"] == 7
    assert all(c["observedGeneration"] == 7 for c in st["conditions"])
    assert conds(st["regions"][0])["Ready"] == ("True", "Healthy")


def test_not_probed_is_pending() -> None:
    st = status.mesh_status(spec_of(REGIONS), {})
    assert st["phase"] == "Pending" and st["readyRegions"] == "0/3"
    assert conds(st["regions"][0])["Ready"] == ("False", "NotProbed")


def test_partial_region_is_degraded_with_reason() -> None:
    st = status.mesh_status(spec_of(REGIONS), {"a": health("a", services=False), "b": health("b"), "c": health("c")})
    assert st["phase"] == "Degraded"
    assert conds(st["regions"][0])["Ready"] == ("False", "ServiceUnreachable")
    assert conds(st["regions"][0])["Degraded"] == ("True", "ServiceUnreachable")


def test_down_region_not_waited_for() -> None:
    regions = [{"name": "a", "down": True}, {"name": "b"}, {"name": "c"}]
    st = status.mesh_status(spec_of(regions), {"b": health("b"), "c": health("c")})
    assert st["phase"] == "Running" and st["readyRegions"] == "2/2"
    assert conds(st["regions"][0])["Ready"] == ("False", "MarkedDown")


def test_draining_and_drained_conditions() -> None:
    regions = [{"name": "a", "mode": "Draining"}, {"name": "b", "mode": "Drained"}, {"name": "c"}]
    st = status.mesh_status(spec_of(regions), {"c": health("c")})
    assert conds(st["regions"][0])["Draining"] == ("True", "ClientsDrained")
    assert conds(st["regions"][1])["Draining"] == ("True", "NatsScaledDown")
    assert conds(st["regions"][2])["Draining"] == ("False", "Active")


def test_transition_time_kept_when_status_unchanged() -> None:
    first = status.mesh_status(spec_of(REGIONS), {})
    first["regions"][0]["conditions"][0]["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    again = status.mesh_status(spec_of(REGIONS), {}, first)
    assert again["regions"][0]["conditions"][0]["lastTransitionTime"] == "2000-01-01T00:00:00Z"


def test_paused_condition() -> None:
    st = status.paused_patch(spec_of(REGIONS, {"xchat.dev/paused": "true"}), {"conditions": []})
    assert st["phase"] == "Paused"
    assert st["conditions"][-1]["type"] == "Paused" and st["conditions"][-1]["status"] == "True"


def test_not_probed_prober() -> None:
    spec = spec_of(REGIONS)
    h = asyncio.run(probes.not_probed(None, spec, spec.regions[0]))  # type: ignore[arg-type]
    assert not h.ready and h.reason == "NatsNotProbed"


def test_settings_from_env() -> None:
    s = settings.from_env({"XCHAT_OPERATOR_PRIORITY": "7", "XCHAT_OPERATOR_RESYNC_SECONDS": "3"})
    assert s.peering.priority == 7 and s.resync.interval == 3.0
    assert settings.from_env({}).resync.interval == settings.DEFAULT_RESYNC_SECONDS


def test_public_surface_is_honest() -> None:
    for name in xchat_operator.__all__:
        assert hasattr(xchat_operator, name), name
    assert sorted(xchat_operator.__all__) == list(xchat_operator.__all__)


def test_malformed_operator_settings_name_the_variable() -> None:
    import pytest

    from xchat_operator.errors import SpecError
    from xchat_operator.settings import from_env

    assert from_env({}).resync.interval > 0
    with pytest.raises(SpecError, match="XCHAT_OPERATOR_RESYNC_SECONDS='abc' is not a number"):
        from_env({"XCHAT_OPERATOR_RESYNC_SECONDS": "abc"})
    with pytest.raises(SpecError, match="XCHAT_OPERATOR_PRIORITY='1.5' is not an integer"):
        from_env({"XCHAT_OPERATOR_PRIORITY": "1.5"})
    with pytest.raises(SpecError, match="must not be negative"):
        from_env({"XCHAT_OPERATOR_PROBE_TIMEOUT_SECONDS": "-1"})
