"""The operator rotates the access-token key without downtime, on the real API server (docs/operator.md, Token keys).

* ``test_ensure_walks_the_phases_in_the_secrets``: ``token_rotation.ensure`` at
  chosen instants against kube-apiserver + etcd: what each phase leaves in the
  two Secrets, the waits between phases, and the upgrade from the Secrets an
  operator before rotations wrote (``stringData``, no annotations).
* ``test_a_rotation_on_a_live_mesh_ends_with_the_old_key_refused``: the
  operator itself, driven by the ``xchat.dev/rotate-token-key`` annotation,
  reports each phase in ``status.tokenKeys``, the ``TokenKeyRotation``
  condition and events, while real services read the Secrets through a
  kubelet stand-in (the auth Deployment's own volume and environment, files
  swapped the way the kubelet swaps them). Attack: once the rotation is over,
  a still-unexpired token signed with the dropped key (whoever kept that key
  can mint one) is refused UNAUTHENTICATED; it was accepted until then.
"""

from __future__ import annotations

import base64
import datetime
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import grpc.aio
import nacl.signing
import pytest

from tests.secret_volume import SecretVolume
from tests.services.conftest import RawDevice
from xchat.core.ids import AccountId, DeviceId
from xchat.core.tokens import CLOCK_SKEW_MS, TokenSigner, key_id
from xchat.v1 import keys_pb2
from xchat_operator import token_rotation as tr
from xchat_operator.kube import Kube
from xchat_operator.spec import parse_mesh
from xchat_operator.testing import NS, eventually, events_for

pytestmark = pytest.mark.envtest

PROPAGATION_S, LIFETIME_S = 2, 4


def _data(kube: Kube, name: str) -> dict[str, str]:
    secret = kube.get("Secret", NS, name) or {}
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def _annotations(kube: Kube, name: str) -> dict[str, str]:
    return dict(((kube.get("Secret", NS, name) or {}).get("metadata") or {}).get("annotations") or {})


def _kid_of_seed(seed: str) -> str:
    return key_id(nacl.signing.SigningKey(base64.b64decode(seed)).verify_key)


def _keys(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


def test_ensure_walks_the_phases_in_the_secrets(kube: Kube) -> None:
    name = "tokwalk"
    body = {"metadata": {"name": name, "namespace": NS, "uid": "tokwalk-uid", "generation": 1},
            "spec": {"regions": [{"name": "a"}], "tokenKeys": {"propagationSeconds": 60, "accessTokenLifetimeSeconds": 300}}}
    signing_name, public_name = f"{name}-token-signing-key", f"{name}-token-public-key"
    # What the operator before rotations left: stringData, no annotations, no retired list.
    legacy_seed = tr.new_seed()
    for secret, data in ((signing_name, {"signing.key": legacy_seed}),
                         (public_name, {"public.key": tr.public_of(legacy_seed)})):
        kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": NS},
                    "stringData": data})
    t0 = datetime.datetime.now(datetime.timezone.utc)

    def at(seconds: float) -> datetime.datetime:
        return t0 + datetime.timedelta(seconds=seconds)

    spec = parse_mesh(body)
    assert tr.ensure(kube, spec, now=at(0)) == []  # nothing generated: the key is kept
    assert _data(kube, signing_name)["signing.key"] == legacy_seed
    assert _data(kube, public_name) == {"public.key": f"{tr.public_of(legacy_seed)}\n", "retired.keys": ""}
    assert _annotations(kube, signing_name)[tr.PHASE] == tr.STABLE

    # Requested: Publishing. The new seed sits in next.key; verifiers get its public key; auth's key is unchanged.
    body["metadata"]["annotations"] = {"xchat.dev/rotate-token-key": "walk-1"}
    spec = parse_mesh(body)
    tr.ensure(kube, spec, now=at(1))
    signing = _data(kube, signing_name)
    new_seed = signing["next.key"]
    old_pub, new_pub = tr.public_of(legacy_seed), tr.public_of(new_seed)
    assert signing["signing.key"] == legacy_seed
    assert _keys(_data(kube, public_name)["public.key"]) == [old_pub, new_pub]
    assert _annotations(kube, signing_name)[tr.REQUEST] == "walk-1"
    assert _annotations(kube, public_name)[tr.PUBLISHED] == at(1).isoformat(timespec="milliseconds")
    tr.ensure(kube, spec, now=at(60))  # < published + P
    assert _annotations(kube, signing_name)[tr.PHASE] == tr.PUBLISHING

    # Switched: auth's seed is the new one, next.key is gone, both keys still accepted.
    tr.ensure(kube, spec, now=at(61))
    signing = _data(kube, signing_name)
    assert signing["signing.key"] == new_seed and "next.key" not in signing
    assert _annotations(kube, signing_name)[tr.PHASE] == tr.RETIRING
    assert set(_keys(_data(kube, public_name)["public.key"])) == {old_pub, new_pub}
    wait = 60 + 300 + CLOCK_SKEW_MS / 1000
    tr.ensure(kube, spec, now=at(61 + wait - 1))
    assert _annotations(kube, signing_name)[tr.PHASE] == tr.RETIRING

    # Dropped: only the new key is accepted; the old one is retired (auth's directory still names it).
    tr.ensure(kube, spec, now=at(61 + wait))
    public = _data(kube, public_name)
    assert _keys(public["public.key"]) == [new_pub] and _keys(public["retired.keys"]) == [old_pub]
    assert _annotations(kube, signing_name)[tr.PHASE] == tr.STABLE
    assert tr.observe(kube, spec, now=at(61 + wait))["lastRotation"] == at(61 + wait).isoformat(timespec="milliseconds")
    # The same request never rotates twice.
    tr.ensure(kube, spec, now=at(10_000))
    assert _data(kube, signing_name)["signing.key"] == new_seed

    # Emergency rotation: the signing Secret deleted. A new key at once, every earlier one retired.
    kube.delete("Secret", NS, signing_name)
    assert tr.ensure(kube, spec, now=at(10_001)) == [signing_name]
    newest = _data(kube, signing_name)["signing.key"]
    public = _data(kube, public_name)
    assert _keys(public["public.key"]) == [tr.public_of(newest)]
    assert _keys(public["retired.keys"]) == [old_pub, new_pub]
    assert _keys(_data(kube, signing_name)["retired.keys"]) == [old_pub, new_pub], "kept in both Secrets"
    for secret in (signing_name, public_name):
        kube.delete("Secret", NS, secret)


class _Kubelet:
    """Projects one pod's ``token`` volume from the Secrets it names, every ``period``, by symlink swap."""

    def __init__(self, kube: Kube, volume: Mapping[str, Any], target: SecretVolume, period: float = 0.25) -> None:
        self._kube, self._target, self._period = kube, target, period
        if "projected" in volume:
            self._sources = [(s["secret"]["name"], s["secret"]["items"]) for s in volume["projected"]["sources"]]
        else:
            self._sources = [(volume["secret"]["secretName"], volume["secret"]["items"])]
        self._stop = threading.Event()
        self._last: dict[str, str] | None = None
        self.sync()
        self._thread = threading.Thread(target=self._run, name="kubelet-stand-in", daemon=True)
        self._thread.start()

    def sync(self) -> None:
        files: dict[str, str] = {}
        for secret, items in self._sources:
            data = _data(self._kube, secret)
            for item in items:
                files[item["path"]] = data[item["key"]]
        if files != self._last:
            self._target.project(files)
            self._last = files

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - a failed read keeps the files, as the kubelet does
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def kubelets() -> Iterator[list[_Kubelet]]:
    started: list[_Kubelet] = []
    yield started
    for kubelet in started:
        kubelet.stop()


def _status(kube: Kube, name: str) -> dict[str, Any]:
    return dict(((kube.get("XChatMesh", NS, name) or {}).get("status") or {}).get("tokenKeys") or {})


def _condition(kube: Kube, name: str) -> tuple[str, str]:
    for c in ((kube.get("XChatMesh", NS, name) or {}).get("status") or {}).get("conditions") or ():
        if c["type"] == "TokenKeyRotation":
            return c["status"], c["reason"]
    return ("", "")


async def _count_prekeys(channel: grpc.aio.Channel, token: str) -> grpc.StatusCode:
    stub = RawDevice(channel, "", nacl.signing.SigningKey.generate()).keys
    try:
        await stub.CountPrekeys(keys_pb2.CountPrekeysRequest(), metadata=(("authorization", f"Bearer {token}"),))
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _until(check: Any, what: str, timeout: float = 60.0) -> Any:
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        out = await check()
        if out:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


async def test_a_rotation_on_a_live_mesh_ends_with_the_old_key_refused(
    kube: Kube, make_mesh, fresh_mesh_factory, kubelets, tmp_path
) -> None:
    name = "tokrot"
    make_mesh(name, tokenKeys={"propagationSeconds": PROPAGATION_S, "accessTokenLifetimeSeconds": LIFETIME_S})
    signing_name, public_name = f"{name}-token-signing-key", f"{name}-token-public-key"
    eventually(lambda: _status(kube, name).get("phase") == tr.STABLE, 60, what="the first key, Stable")
    first_seed = _data(kube, signing_name)["signing.key"]
    first_kid = _kid_of_seed(first_seed)
    assert _status(kube, name)["signingKeyId"] == first_kid and _condition(kube, name) == ("False", tr.STABLE)

    # Real services reading what the auth pods mount, where the Deployment says they find it.
    auth = eventually(lambda: kube.get("Deployment", NS, f"{name}-auth-a"), 60, what="auth Deployment")
    pod = auth["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "token")
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "token")["mountPath"]
    files = SecretVolume(tmp_path / "auth-token")
    kubelets.append(_Kubelet(kube, volume, files))
    env = {e["name"]: e["value"].replace(mount, str(files.path))
           for e in pod["containers"][0]["env"] if e["name"].startswith("XCHAT_TOKEN_") or e["name"] == "XCHAT_ACCESS_TOKEN_LIFETIME_MS"}
    assert set(env) == {"XCHAT_TOKEN_SIGNING_KEY_FILE", "XCHAT_TOKEN_PUBLIC_KEY_FILE",
                        "XCHAT_TOKEN_RETIRED_PUBLIC_KEYS_FILE", "XCHAT_ACCESS_TOKEN_LIFETIME_MS"}
    assert env["XCHAT_ACCESS_TOKEN_LIFETIME_MS"] == str(LIFETIME_S * 1000)
    mesh = fresh_mesh_factory(regions=("solo",), replicas=1,
                              extra_env={**env, "XCHAT_TOKEN_KEY_RELOAD_S": "0.2", "XCHAT_CALL_RATE": "1000"})
    channel = grpc.aio.insecure_channel(mesh.regions["solo"].endpoint)
    try:
        alice = await RawDevice(channel, f"u{secrets.token_hex(6)}", nacl.signing.SigningKey.generate()).register()
        assert tr_kid(alice.token) == first_kid
        old_key = nacl.signing.SigningKey(base64.b64decode(first_seed))

        def stolen() -> str:
            """A fresh token of the first key, valid for 10 minutes: what a holder of that key can mint."""
            signer = TokenSigner(signing_key=old_key, lifetime_ms=600_000)
            return signer.issue(AccountId(alice.account), DeviceId(alice.device_id))[0]

        kube.merge_patch("XChatMesh", NS, name, {"metadata": {"annotations": {"xchat.dev/rotate-token-key": "1"}}})

        # Publishing: the new public key reaches every verifier first; auth still holds only the old seed.
        # (The first reconcile after the annotation: ci-local at load ~10 took over 30 s to reach it.)
        publishing = eventually(lambda: _status(kube, name) if _status(kube, name).get("phase") == tr.PUBLISHING else None,
                                90, interval=0.1, what="phase Publishing")
        assert _condition(kube, name)[:2] == ("True", tr.PUBLISHING)
        next_seed = _data(kube, signing_name).get("next.key") or _data(kube, signing_name)["signing.key"]
        next_kid = _kid_of_seed(next_seed)
        assert publishing["nextKeyId"] == next_kid and publishing["signingKeyId"] == first_kid
        assert set(publishing["acceptedKeyIds"]) <= {first_kid, next_kid}
        new_key = nacl.signing.SigningKey(base64.b64decode(next_seed))
        probe = TokenSigner(signing_key=new_key, lifetime_ms=600_000).issue(AccountId(alice.account), DeviceId(alice.device_id))[0]

        async def new_key_verified() -> bool:
            return await _count_prekeys(channel, probe) == grpc.StatusCode.OK

        await _until(new_key_verified, "the services to accept the new key")

        # Retiring: auth signs with the new key; the old one is still accepted.
        retiring = eventually(lambda: _status(kube, name) if _status(kube, name).get("phase") == tr.RETIRING else None,
                              60, interval=0.1, what="phase Retiring")
        assert retiring["signingKeyId"] == next_kid and retiring["previousKeyId"] == first_kid
        published_at = datetime.datetime.fromisoformat(_annotations(kube, public_name)[tr.PUBLISHED])
        switched_at = datetime.datetime.fromisoformat(retiring["since"])
        assert switched_at - published_at >= datetime.timedelta(seconds=PROPAGATION_S), "switched before verifiers had the key"
        assert "next.key" not in _data(kube, signing_name)

        async def logins_get_the_new_kid() -> bool:
            fresh = RawDevice(channel, alice.account, alice.key, alice.device_id)
            return tr_kid((await fresh.login()).token) == next_kid

        await _until(logins_get_the_new_kid, "auth to sign with the new key")
        if _status(kube, name).get("phase") == tr.RETIRING:  # the old key's tokens still work until they expire
            assert await _count_prekeys(channel, stolen()) == grpc.StatusCode.OK

        # Stable again: the old key is dropped, and its tokens are refused.
        done = eventually(lambda: _status(kube, name) if _status(kube, name).get("phase") == tr.STABLE else None,
                          PROPAGATION_S + LIFETIME_S + CLOCK_SKEW_MS / 1000 + 60, interval=0.25, what="phase Stable")
        assert done["signingKeyId"] == next_kid and done["acceptedKeyIds"] == [next_kid] and done["retiredKeys"] == 1
        assert done["request"] == "1" and _condition(kube, name) == ("False", tr.STABLE)
        rotated_at = datetime.datetime.fromisoformat(done["lastRotation"])
        assert rotated_at - switched_at >= datetime.timedelta(seconds=PROPAGATION_S + LIFETIME_S, milliseconds=CLOCK_SKEW_MS)
        public = _data(kube, public_name)
        assert _keys(public["public.key"]) == [tr.public_of(next_seed)]
        assert _keys(public["retired.keys"]) == [tr.public_of(first_seed)]
        for reason in ("TokenKeyPublished", "TokenKeySwitched", "TokenKeyRetired"):
            eventually(lambda r=reason: events_for(kube, NS, name, r), 30, what=f"event {reason}")

        async def old_key_refused() -> grpc.StatusCode:
            code = await _count_prekeys(channel, stolen())
            return code if code != grpc.StatusCode.OK else None

        assert await _until(old_key_refused, "the dropped key to be refused") == grpc.StatusCode.UNAUTHENTICATED
        assert await _count_prekeys(channel, probe) == grpc.StatusCode.OK  # the new key keeps working
        # One rotation per request: later passes leave the key alone.
        time.sleep(3)
        assert _status(kube, name)["signingKeyId"] == next_kid and _status(kube, name)["phase"] == tr.STABLE
    finally:
        await channel.close()


def tr_kid(token: str) -> str:
    import json

    claims = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["kid"])
