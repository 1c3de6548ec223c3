"""``spec.keyTransparency`` on the real API server: the operator gives auth (and only auth) the
variables, an edit rolls the auth pods, and the schema refuses what auth could not parse."""

from __future__ import annotations

import base64
from typing import Any

import nacl.signing
import pytest

from xchat_operator.errors import KubeError
from xchat_operator.kube import Kube
from xchat_operator.testing import NS, eventually, mesh_manifest, settle_workloads

pytestmark = pytest.mark.envtest

ELSEWHERE = "elsewhere"  # no operator watches it: what the API server alone refuses
KT_VARS = ("XCHAT_KT_AUDITOR_KEYS", "XCHAT_KT_EPOCH_INTERVAL_S")


def auditor_key() -> str:
    return base64.b64encode(nacl.signing.SigningKey.generate().verify_key.encode()).decode()


def env_of(kube: Kube, name: str) -> dict[str, str]:
    dep = kube.get("Deployment", NS, name)
    assert dep is not None, name
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_auth_deployments_get_the_settings_and_an_edit_rolls_them(kube: Kube, make_mesh) -> None:
    first, second = auditor_key(), auditor_key()
    make_mesh("ktmesh", keyTransparency={"auditorKeys": [first], "epochIntervalSeconds": 0.5})

    def auth_env(region: str, keys: str) -> dict[str, str]:
        settle_workloads(kube, NS, "ktmesh")  # envtest runs no Deployment controller: a roll waits for it
        env = env_of(kube, f"ktmesh-auth-{region}")
        assert env.get("XCHAT_KT_AUDITOR_KEYS") == keys, env.get("XCHAT_KT_AUDITOR_KEYS")
        return env

    def others(region: str) -> dict[str, set[str]]:
        # Every Deployment exists (applied after auth's, maybe not yet) and none has the variables.
        return {s: set(KT_VARS) & set(env_of(kube, f"ktmesh-{s}-{region}")) for s in ("keys", "relay", "mailbox")}

    for region in "abc":
        env = eventually(lambda r=region: auth_env(r, first), 90, what=f"auth env in region {region}")
        assert env["XCHAT_KT_EPOCH_INTERVAL_S"] == "0.5"
        got = eventually(lambda r=region: others(r), 60, what=f"the other services in region {region}")
        assert got == {"keys": set(), "relay": set(), "mailbox": set()}, got
    relay_before = kube.get("Deployment", NS, "ktmesh-relay-a")["metadata"]["annotations"]

    kube.merge_patch("XChatMesh", NS, "ktmesh", {"spec": {"keyTransparency": {"auditorKeys": [first, second]}}})
    for region in "abc":
        eventually(lambda r=region: auth_env(r, f"{first},{second}"), 120, what=f"auth rolled in region {region}")
    # The other services' pod templates did not change: nothing but auth restarts.
    assert kube.get("Deployment", NS, "ktmesh-relay-a")["metadata"]["annotations"] == relay_before


def rejected(kube: Kube, **spec: Any) -> str:
    with pytest.raises(KubeError) as err:
        kube.create(mesh_manifest("ktbad", namespace=ELSEWHERE, **spec))
    assert err.value.status == 422, err.value
    return str(err.value)


def test_a_malformed_auditor_key_is_refused_with_the_format(kube: Kube, envtest_env) -> None:
    # The environment variable's comma-separated form, put into one entry: the likeliest mistake.
    msg = rejected(kube, keyTransparency={"auditorKeys": [f"{auditor_key()},{auditor_key()}"]})
    assert "spec.keyTransparency.auditorKeys[0] in body should match '^[A-Za-z0-9+/]{43}=$'" in msg, msg
    for key in ("not-a-key" + "A" * 34 + "=", auditor_key().rstrip("=") + "A", "-" * 43 + "=", "", auditor_key()[:-2]):
        assert "spec.keyTransparency.auditorKeys[0] in body should match" in rejected(
            kube, keyTransparency={"auditorKeys": [key]}), key


@pytest.mark.parametrize(("kt", "message"), [
    ({"epochIntervalSeconds": 0}, "spec.keyTransparency.epochIntervalSeconds in body should be greater than 0"),
    ({"epochIntervalSeconds": -2}, "spec.keyTransparency.epochIntervalSeconds in body should be greater than 0"),
    ({"epochIntervalSeconds": 61}, "spec.keyTransparency.epochIntervalSeconds in body should be less than or equal to 60"),
    ({"epochIntervalSeconds": "1"}, 'spec.keyTransparency.epochIntervalSeconds in body must be of type number: "string"'),
    ({"auditorKeys": ["K" * 43 + "="] * 2}, "spec.keyTransparency.auditorKeys[1]: Duplicate value"),
    ({"auditorKeys": [auditor_key() for _ in range(17)]}, "must have at most 16 items"),
], ids=["zero", "negative", "over-a-minute", "string", "duplicate", "seventeen"])
def test_bad_intervals_and_lists_are_refused(kube: Kube, envtest_env, kt: dict[str, Any], message: str) -> None:
    msg = rejected(kube, keyTransparency=kt)
    assert message in msg, msg


def test_good_settings_are_stored_as_given(kube: Kube, envtest_env) -> None:
    keys = [auditor_key() for _ in range(16)]
    obj = kube.create(mesh_manifest("ktgood", namespace=ELSEWHERE,
                                    keyTransparency={"auditorKeys": keys, "epochIntervalSeconds": 60}))
    try:
        assert obj["spec"]["keyTransparency"] == {"auditorKeys": keys, "epochIntervalSeconds": 60}
    finally:
        kube.delete("XChatMesh", ELSEWHERE, "ktgood")
