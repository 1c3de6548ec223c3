"""``spec.keyTransparency`` becomes auth's environment, and auth's alone (no kopf, no API server).

The variables are read back with the services' own settings parser, so the
format the operator writes is the one auth takes; the CRD's pattern is checked
against that parser too (the envtest file shows the API server enforcing it).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import yaml

from xchat.core.settings import SettingsError, from_env
from xchat_operator import builders, rollout
from xchat_operator.errors import SpecError
from xchat_operator.spec import AUDITOR_KEY_PATTERN, MAX_KT_AUDITOR_KEYS, MAX_KT_EPOCH_INTERVAL_SECONDS, parse_mesh

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "operator" / "crd" / "xchatmesh.yaml"
PASSWORDS = {"auth": "pa", "keys": "pk", "relay": "pr", "mailbox": "pm", "bootstrap": "pb", "route": "px"}
KT_VARS = {"XCHAT_KT_AUDITOR_KEYS", "XCHAT_KT_EPOCH_INTERVAL_S"}


def auditor_key() -> str:
    return base64.b64encode(nacl.signing.SigningKey.generate().verify_key.encode()).decode()


def body(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "m", "namespace": "ns", "uid": "u"},
            "spec": {"regions": [{"name": "a"}, {"name": "b"}, {"name": "c"}], **spec}}


def deployments(**spec: Any) -> dict[str, dict[str, Any]]:
    objs = builders.desired_objects(parse_mesh(body(**spec)), PASSWORDS)
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}


def container_env(dep: dict[str, Any]) -> dict[str, str]:
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_auth_gets_the_variables_and_no_other_service_does() -> None:
    keys = [auditor_key(), auditor_key()]
    deps = deployments(keyTransparency={"auditorKeys": keys, "epochIntervalSeconds": 2.5})
    for region in "abc":
        env = container_env(deps[f"m-auth-{region}"])
        assert env["XCHAT_KT_AUDITOR_KEYS"] == ",".join(keys)
        assert env["XCHAT_KT_EPOCH_INTERVAL_S"] == "2.5"
        for service in ("keys", "relay", "mailbox"):
            assert KT_VARS.isdisjoint(container_env(deps[f"m-{service}-{region}"])), service
    # What auth's own parser makes of them: the same keys, the same interval.
    env = container_env(deps["m-auth-a"])
    settings = from_env({"XCHAT_REGION": "a", "XCHAT_NATS_URLS": "nats://n:4222",
                         **{k: env[k] for k in KT_VARS}}, services=("auth",), token_signing_seed=b"s" * 32)
    assert settings.kt_auditor_keys == tuple(base64.b64decode(k) for k in keys)
    assert settings.kt_epoch_interval_s == 2.5


def test_whole_seconds_are_written_as_integers() -> None:
    env = container_env(deployments(keyTransparency={"epochIntervalSeconds": 30})["m-auth-b"])
    assert env["XCHAT_KT_EPOCH_INTERVAL_S"] == "30" and "XCHAT_KT_AUDITOR_KEYS" not in env


def test_unset_fields_set_nothing_and_leave_every_template_as_it_was() -> None:
    plain, empty = deployments(), deployments(keyTransparency={"auditorKeys": []})
    for name, dep in plain.items():
        assert KT_VARS.isdisjoint(container_env(dep))
        assert rollout.template_hash(empty[name]) == rollout.template_hash(dep), name


def test_a_change_rolls_the_auth_pods_only() -> None:
    before = deployments(keyTransparency={"auditorKeys": [auditor_key()]})
    after = deployments(keyTransparency={"auditorKeys": [auditor_key()]})
    changed = {n for n in before if rollout.template_hash(before[n]) != rollout.template_hash(after[n])}
    assert changed == {"m-auth-a", "m-auth-b", "m-auth-c"}


@pytest.mark.parametrize(
    ("kt", "message"),
    [
        ({"auditorKeys": ["not-a-key"]}, "keyTransparency.auditorKeys[0] is not a base64 Ed25519 public key"),
        ({"auditorKeys": ["AAAA,BBBB"]}, "one key per entry"),
        ({"auditorKeys": [auditor_key()[:-1] + "A"]}, "44 characters ending in '='"),
        ({"auditorKeys": ["K" * 43 + "="] * 2}, "more than once; remove the duplicate"),
        ({"auditorKeys": [auditor_key() for _ in range(MAX_KT_AUDITOR_KEYS + 1)]}, "at most 16 are allowed"),
        ({"epochIntervalSeconds": 0}, "must be a number of seconds above 0 and at most 60, not 0"),
        ({"epochIntervalSeconds": -1.5}, "above 0"),
        ({"epochIntervalSeconds": 61}, "at most 60"),
        ({"epochIntervalSeconds": "1"}, "not '1'"),
        ({"epochIntervalSeconds": True}, "not True"),
    ],
    ids=["not-base64", "comma-separated", "no-padding", "duplicate", "seventeen", "zero", "negative", "over-max",
         "string", "bool"],
)
def test_values_the_schema_would_refuse_are_spec_errors(kt: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_mesh(body(keyTransparency=kt))


def _kt_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["keyTransparency"]["properties"]


def test_the_crd_bounds_are_the_parsers() -> None:
    schema = _kt_schema()
    assert schema["auditorKeys"]["items"]["pattern"] == AUDITOR_KEY_PATTERN
    assert schema["auditorKeys"]["maxItems"] == MAX_KT_AUDITOR_KEYS
    assert schema["epochIntervalSeconds"]["maximum"] == MAX_KT_EPOCH_INTERVAL_SECONDS
    assert schema["epochIntervalSeconds"]["minimum"] == 0 and schema["epochIntervalSeconds"]["exclusiveMinimum"] is True


@pytest.mark.parametrize("candidate", [
    auditor_key(), "A" * 43 + "=", "/+" * 21 + "w=",
    "A" * 42 + "==", "A" * 44, "A" * 44 + "=", "-" * 43 + "=", "_" * 43 + "=", " " + "A" * 43 + "=", "A" * 43 + "=\n",
])
def test_the_pattern_admits_exactly_what_auth_parses(candidate: str) -> None:
    """A key the CRD admits is one auth takes as it is (the pattern is not looser than the service)."""
    admitted = re.fullmatch(AUDITOR_KEY_PATTERN, candidate) is not None
    try:
        parsed = from_env({"XCHAT_REGION": "a", "XCHAT_NATS_URLS": "nats://n:4222", "XCHAT_KT_AUDITOR_KEYS": candidate},
                          services=("auth",), token_signing_seed=b"s" * 32).kt_auditor_keys
        taken = parsed == (base64.b64decode(candidate.strip()),)
    except SettingsError:
        taken = False
    # Auth strips blanks around entries; the CRD refuses them (one exact spelling per key).
    assert admitted == (taken and candidate == candidate.strip())
