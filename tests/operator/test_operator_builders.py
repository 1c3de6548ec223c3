"""Unit tests of the builders: no kopf, no network, no API server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xchat_operator import builders, names, natsconfig
from xchat_operator.spec import RegionMode, parse_mesh

PASSWORDS = {"auth": "pa", "keys": "pk", "relay": "pr", "mailbox": "pm", "bootstrap": "pbootstrap", "route": "proute"}


def mesh_body(**spec_overrides: object) -> dict:
    spec = {
        "regions": [{"name": "eu"}, {"name": "us"}, {"name": "ap"}],
        **spec_overrides,
    }
    return {"metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 3}, "spec": spec}


def objects(**kw: object) -> list[dict]:
    return builders.desired_objects(parse_mesh(mesh_body(**kw)), PASSWORDS)


def get(objs: list[dict], kind: str, name: str) -> dict:
    obj = builders.find(objs, kind, name)
    assert obj is not None, f"{kind}/{name} missing"
    return obj


def test_every_child_has_owner_reference_and_labels() -> None:
    objs = objects()
    assert objs
    for o in objs:
        ref = o["metadata"]["ownerReferences"][0]
        assert ref["kind"] == "XChatMesh" and ref["uid"] == "u-1" and ref["controller"] is True
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "xchat-operator"
        assert o["metadata"]["namespace"] == "ns"
        assert len(o["metadata"]["name"]) <= 63


def test_per_region_children() -> None:
    objs = objects()
    kinds = sorted({o["kind"] for o in objs})
    assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service", "StatefulSet"]
    for region in ("eu", "us", "ap"):
        sts = get(objs, "StatefulSet", f"m-nats-{region}")
        assert sts["spec"]["serviceName"] == f"m-nats-{region}-headless"
        assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
        assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
        assert get(objs, "Service", f"m-nats-{region}-headless")["spec"]["clusterIP"] == "None"
        for svc in ("auth", "keys", "relay", "mailbox"):
            dep = get(objs, "Deployment", f"m-{svc}-{region}")
            assert dep["spec"]["replicas"] == 2
            assert dep["spec"]["template"]["spec"]["containers"][0]["command"] == ["xchat", "serve", svc]
            get(objs, "PodDisruptionBudget", f"m-{svc}-{region}")
            get(objs, "Service", f"m-{svc}-{region}")


def test_nats_config_safety_knobs() -> None:
    spec = parse_mesh(mesh_body())
    conf = natsconfig.nats_config(spec, spec.region("us"), PASSWORDS)
    assert 'server_tags: ["region:us"]' in conf
    assert 'unique_tag: "region:"' in conf
    assert "sync_interval: always" in conf
    assert 'store_dir: "/data/jetstream"' in conf
    assert 'name: "m"' in conf  # one cluster named after the mesh
    # Route pings (ADR 0013): a frozen region leaves the routing within ~1.5 s, not 2 minutes.
    cluster = conf[conf.index("cluster: {"):]
    assert 'ping_interval: "500ms"' in cluster and "ping_max: 2" in cluster
    for region in ("eu", "us", "ap"):
        assert f"nats-route://route:proute@m-nats-{region}-0.m-nats-{region}-headless.ns.svc.cluster.local:6222" in conf


def test_routes_keep_down_and_drained_regions() -> None:
    spec = parse_mesh(mesh_body(regions=[{"name": "eu", "down": True}, {"name": "us", "mode": "Drained"},
                                         {"name": "ap"}]))
    urls = natsconfig.route_urls(spec, "x", "cluster.local")
    assert len(urls) == 3  # the operator never drops a peer on its own


def test_service_permissions_are_least_privilege() -> None:
    p = natsconfig.PERMISSIONS
    assert "xchat.mbx.*" in p["relay"] and "xchat.mbx.*" not in p["mailbox"]
    assert "$KV.xchat_accounts.>" in p["auth"]
    assert not any(s.startswith("$KV.xchat_accounts") for s in p["keys"] + p["relay"] + p["mailbox"])
    assert "$KV.xchat_prekeys.>" in p["keys"] and not any("prekeys" in s for s in p["auth"])
    assert "$JS.API.DIRECT.GET.KV_xchat_devices.>" in p["relay"]
    assert "$KV.xchat_devices.>" not in p["relay"]  # read-only there
    assert "$JS.API.STREAM.MSG.DELETE.XCHAT_MAILBOX" in p["mailbox"]
    assert not any("CONSUMER" in s for perms in p.values() for s in perms), "no consumers anywhere"
    assert not any(s in (">", "$JS.API.>", "$JS.>") for perms in p.values() for s in perms)
    assert natsconfig.SUBSCRIBE["mailbox"] == (
        "_INBOX_mailbox.>", "xchat.limits.mailbox", "xchat.ntf.*", "xchat.eph.*", "xchat.online", "xchat.alive"
    )
    # Typing and presence (core NATS, never stored): relay publishes, mailbox delivers; the online view is mailbox's own.
    assert "xchat.eph.*" in p["relay"] and "xchat.eph.*" not in p["mailbox"]
    assert "xchat.eph.*" not in natsconfig.SUBSCRIBE["relay"]
    assert "xchat.online" in p["mailbox"] and not any("xchat.online" in x for x in p["relay"] + p["auth"] + p["keys"])
    # Region liveness beats (xchat.core.liveness): mailbox's own too.
    assert "xchat.alive" in p["mailbox"] and not any("xchat.alive" in x for x in p["relay"] + p["auth"] + p["keys"])
    # Push tokens: mailbox alone reads and writes them.
    assert "$KV.xchat_push.>" in p["mailbox"] and not any("xchat_push" in x for x in p["relay"] + p["auth"] + p["keys"])
    # Shared rate limits: each service on its own subject only (xchat.core.sharedlimits).
    for svc in ("auth", "keys", "relay", "mailbox"):
        assert [x for x in p[svc] if x.startswith("xchat.limits")] == [f"xchat.limits.{svc}"]
        assert [x for x in natsconfig.SUBSCRIBE[svc] if x.startswith("xchat.limits")] == [f"xchat.limits.{svc}"]
    assert not any(x.startswith("xchat.limits") for x in p["bootstrap"] + natsconfig.SUBSCRIBE["bootstrap"])
    # Each user reads only its own replies; none may reshape storage or list the mailbox stream.
    for user, subscribe in natsconfig.SUBSCRIBE.items():
        assert [x for x in subscribe if x.startswith("_INBOX")] == [f"_INBOX_{user}.>"]
    for svc in ("auth", "keys", "relay", "mailbox"):
        assert not any(op in x for x in p[svc] for op in ("STREAM.CREATE.", "STREAM.UPDATE.", "STREAM.DELETE."))
        assert "$JS.API.STREAM.INFO.XCHAT_MAILBOX" not in p[svc]
    assert "$JS.API.STREAM.UPDATE.XCHAT_MAILBOX" in p["bootstrap"]
    # Key transparency (ADR 0014): only auth appends to and reads the log; bootstrap shapes it.
    assert {"xchat.kt.entry", "xchat.kt.epoch", "$JS.API.DIRECT.GET.XCHAT_KT"} <= set(p["auth"])
    assert not any("XCHAT_KT" in x or x.startswith("xchat.kt") for svc in ("keys", "relay", "mailbox") for x in p[svc])
    assert "$JS.API.STREAM.UPDATE.XCHAT_KT" in p["bootstrap"]
    # Auditors' statements (docs/key-transparency.md): auth's bucket alone.
    assert "$KV.xchat_kt_audit.>" in p["auth"] and "$JS.API.STREAM.CREATE.KV_xchat_kt_audit" in p["bootstrap"]
    assert not any("xchat_kt_audit" in x for svc in ("keys", "relay", "mailbox") for x in p[svc])
    assert not any(x.startswith(("$KV.", "xchat.", "$JS.API.DIRECT")) or "PURGE" in x or "DELETE" in x for x in p["bootstrap"])
    # Attachments (docs/attachments.md): relay writes chunks and claims and reads them; no listing, no delete.
    assert {"$O.xchat_attachments.C.>", "$O.xchat_attachments.M.>", "$JS.API.DIRECT.GET.OBJ_xchat_attachments",
            "$JS.API.STREAM.MSG.GET.OBJ_xchat_attachments", "$KV.xchat_attachment_quota.>"} <= set(p["relay"])
    assert not any("attachment" in x for svc in ("auth", "keys", "mailbox") for x in p[svc])
    assert not any("OBJ_xchat_attachments" in x and ("INFO" in x or "DELETE" in x or "PURGE" in x) for x in p["relay"])
    assert {"$JS.API.STREAM.UPDATE.OBJ_xchat_attachments", "$JS.API.STREAM.CREATE.KV_xchat_attachment_quota"} <= set(p["bootstrap"])
    spec = parse_mesh(mesh_body())
    conf = natsconfig.nats_config(spec, spec.region("eu"), PASSWORDS)
    assert conf.count('subscribe: {\n          allow: ["_INBOX_auth.>", "xchat.limits.auth"]') == 1
    assert '"$KV.xchat_prekeys.>"' in conf


@pytest.mark.skipif(shutil.which("nats-server") is None and not (Path(sys.prefix) / "bin/nats-server").exists(),
                    reason="nats-server binary not installed")
def test_generated_config_parses_with_nats_server(tmp_path: Path) -> None:
    binary = shutil.which("nats-server") or str(Path(sys.prefix) / "bin/nats-server")
    conf = tmp_path / "nats.conf"
    plain = parse_mesh(mesh_body())
    conf.write_text(natsconfig.nats_config(plain, plain.region("eu"), PASSWORDS))
    res = subprocess.run([binary, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "POD_NAME": "m-nats-eu-0"})
    assert res.returncode == 0, res.stdout + res.stderr


def test_service_env_contract() -> None:
    spec = parse_mesh(mesh_body(tls={"enabled": True}))
    raw = builders.service_env(spec, "relay", spec.region("us"), "cluster.local")
    env = {e["name"]: e.get("value") for e in raw}
    assert env["XCHAT_REGION"] == "us"
    assert env["XCHAT_LISTEN"] == "0.0.0.0:50051"
    # The URL list is read from the ConfigMap at container start, not written into the template.
    (ref,) = [e["valueFrom"]["configMapKeyRef"] for e in raw if e["name"] == "XCHAT_NATS_URLS"]
    assert ref == {"name": "m-nats-urls", "key": "us"}
    urls = builders.nats_urls_configmap(spec, "cluster.local")["data"]["us"].split(",")
    assert urls[0] == "tls://m-nats-us.ns.svc.cluster.local:4222"  # own region first
    assert {u.split("//")[1].split(".")[0] for u in urls} == {"m-nats-us", "m-nats-eu", "m-nats-ap"}
    assert env["XCHAT_NATS_USER"] == "relay"
    assert env["XCHAT_REPLICAS"] == "3"
    assert "XCHAT_TOKEN_PUBLIC_KEY_FILE" in env and "XCHAT_TOKEN_SIGNING_KEY_FILE" not in env
    assert env["XCHAT_TLS_CA_FILE"].endswith("ca.crt")
    auth = {e["name"]: e.get("value") for e in builders.service_env(spec, "auth", spec.region("us"), "cluster.local")}
    assert auth["XCHAT_TOKEN_SIGNING_KEY_FILE"] == "/etc/xchat/token/signing.key"
    assert auth["XCHAT_TOKEN_PUBLIC_KEY_FILE"] == "/etc/xchat/token/public.key"
    assert auth["XCHAT_TOKEN_RETIRED_PUBLIC_KEYS_FILE"] == "/etc/xchat/token/retired.keys"
    assert auth["XCHAT_ACCESS_TOKEN_LIFETIME_MS"] == "300000"  # spec.tokenKeys.accessTokenLifetimeSeconds


def _token_items(volume: dict) -> dict[str, list[str]]:
    """Secret name -> the keys a ``token`` volume projects from it."""
    sources = volume["projected"]["sources"] if "projected" in volume else [
        {"secret": {"name": volume["secret"]["secretName"], "items": volume["secret"]["items"]}}]
    return {s["secret"]["name"]: [i["key"] for i in s["secret"]["items"]] for s in sources}


def test_only_auth_mounts_the_signing_key() -> None:
    objs = objects()
    for svc in ("auth", "keys", "relay", "mailbox"):
        dep = get(objs, "Deployment", f"m-{svc}-eu")
        vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        # Never next.key (a rotation's coming seed), and the seed to auth alone; auth also reads the
        # accepted public keys (a rotation's other key) and the retired ones (its directory's heads).
        expected = {names.public_key_secret("m"): ["public.key"]}
        if svc == "auth":
            expected = {names.signing_key_secret("m"): ["signing.key"],
                        names.public_key_secret("m"): ["public.key", "retired.keys"]}
        assert _token_items(vols["token"]) == expected
        assert vols["nats"]["secret"]["items"] == [{"key": svc, "path": "password"}]


def test_drain_lifecycle_objects() -> None:
    draining = objects(regions=[{"name": "eu", "mode": "Draining"}, {"name": "us"}, {"name": "ap"}])
    assert get(draining, "Deployment", "m-relay-eu")["spec"]["replicas"] == 0
    assert get(draining, "StatefulSet", "m-nats-eu")["spec"]["replicas"] == 1  # NATS stays
    ep = get(draining, "ConfigMap", "m-endpoints")["data"]
    assert "eu=" not in ep["endpoints"] and ep["regions"] == "us,ap"
    drained = objects(regions=[{"name": "eu", "mode": "Drained"}, {"name": "us"}, {"name": "ap"}])
    assert get(drained, "StatefulSet", "m-nats-eu")["spec"]["replicas"] == 0
    assert "m-nats-eu" not in get(drained, "ConfigMap", "m-nats-urls")["data"]["us"]
    # ... and the Deployments of the other regions are untouched by the drain (no restart).
    active = objects()
    for region in ("us", "ap"):
        for svc in ("auth", "keys", "relay", "mailbox"):
            name = f"m-{svc}-{region}"
            assert get(drained, "Deployment", name)["spec"]["template"] == get(active, "Deployment", name)["spec"]["template"]


def test_down_region_out_of_endpoints() -> None:
    objs = objects(regions=[{"name": "eu", "down": True}, {"name": "us"}, {"name": "ap"}])
    assert get(objs, "ConfigMap", "m-endpoints")["data"]["regions"] == "us,ap"
    assert get(objs, "Deployment", "m-auth-eu")["spec"]["replicas"] == 0
    assert get(objs, "StatefulSet", "m-nats-eu")["spec"]["replicas"] == 1  # never touched while unreachable


def test_config_hash_rolls_nats_only_on_a_change_a_reload_cannot_apply() -> None:
    """A region added changes only the route list, which nats-server reloads: no roll (the
    config Secret changes and the reloader sidecar signals the server). TLS on/off needs a restart."""
    key = builders.CONFIG_HASH_ANNOTATION

    def config_hash(**kwargs: object) -> str:
        return get(objects(**kwargs), "StatefulSet", "m-nats-eu")["spec"]["template"]["metadata"]["annotations"][key]

    def config_text(**kwargs: object) -> str:
        return get(objects(**kwargs), "Secret", "m-nats-eu-config")["stringData"]["nats.conf"]

    four = [{"name": "eu"}, {"name": "us"}, {"name": "ap"}, {"name": "sa"}]
    assert config_text() != config_text(regions=four)  # the routes to sa are in the Secret...
    assert config_hash() == config_hash(regions=four)  # ...and reach the servers by reload
    assert config_hash(tls={"enabled": True}) != config_hash(tls={"enabled": False})


def test_spec_defaults_and_modes() -> None:
    spec = parse_mesh(mesh_body(regions=[{"name": "eu", "mode": "Draining", "storage": {"size": "5Gi"}},
                                         {"name": "us"}, {"name": "ap"}]))
    assert spec.image == "xchat:0.1.0" and spec.nats_image == "nats:2.12-alpine"
    assert spec.region("eu").mode is RegionMode.DRAINING and not spec.region("eu").serving
    assert spec.region("eu").storage.size == "5Gi"
    assert spec.jetstream_replicas == 3
    assert not spec.paused
    paused = parse_mesh({**mesh_body(), "metadata": {"name": "m", "annotations": {"xchat.dev/paused": "true"}}})
    assert paused.paused


def test_tls_bundle_reissue_keeps_ca() -> None:
    from cryptography import x509

    from xchat_operator import credentials

    first = credentials.tls_bundle("m", credentials.mesh_dns_names("m", "ns", "cluster.local", ["a"]))
    again = credentials.tls_bundle("m", credentials.mesh_dns_names("m", "ns", "cluster.local", ["a", "b"]),
                                   ca=(first["ca.crt"], first["ca.key"]))
    assert again["ca.crt"] == first["ca.crt"] and again["tls.crt"] != first["tls.crt"]
    cert = x509.load_pem_x509_certificate(again["tls.crt"].encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "*.m-nats-b-headless.ns.svc.cluster.local" in sans and "*.ns.svc.cluster.local" in sans
    ca = x509.load_pem_x509_certificate(again["ca.crt"].encode())
    cert.verify_directly_issued_by(ca)


def test_pods_never_mount_the_ca_key() -> None:
    objs = objects(tls={"enabled": True})
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet"):
            vols = {v["name"]: v for v in o["spec"]["template"]["spec"]["volumes"]}
            assert [i["key"] for i in vols["tls"]["secret"]["items"]] == ["tls.crt", "tls.key", "ca.crt"]


def test_nats_conf_holds_bcrypt_hashes_and_verifies_client_certificates() -> None:
    import bcrypt

    spec = parse_mesh(mesh_body(tls={"enabled": True}))
    conf = natsconfig.nats_config(spec, spec.region("eu"), PASSWORDS)
    for user in ("auth", "keys", "relay", "mailbox", "bootstrap"):
        assert f'"{PASSWORDS[user]}"' not in conf, user
    hashes = re.findall(r'password: "(\$2b\$[^"]+)"', conf)
    assert len(hashes) == 5 and bcrypt.checkpw(b"pbootstrap", hashes[-1].encode())
    # Stable: the same passwords render the same text (no rolling restart per reconcile).
    assert conf == natsconfig.nats_config(spec, spec.region("eu"), PASSWORDS)
    assert conf.count("verify: true") == 2  # client port and routes


def test_monitoring_port_only_on_the_headless_service() -> None:
    objs = objects()
    client = get(objs, "Service", "m-nats-eu")
    headless = get(objs, "Service", "m-nats-eu-headless")
    assert [p["name"] for p in client["spec"]["ports"]] == ["client"]
    assert "monitor" in [p["name"] for p in headless["spec"]["ports"]]


def test_bootstrap_init_container_is_the_only_holder_of_the_bootstrap_password() -> None:
    objs = objects()
    for svc in ("auth", "keys", "relay", "mailbox"):
        dep = get(objs, "Deployment", f"m-{svc}-eu")
        pod = dep["spec"]["template"]["spec"]
        main = pod["containers"][0]
        assert {e["name"]: e.get("value") for e in main["env"]}["XCHAT_NATS_USER"] == svc
        assert all(m["name"] != "bootstrap" for m in main["volumeMounts"])
        # Every service owns a stream or a bucket (mailbox: the push tokens, docs/push.md).
        (init,) = pod["initContainers"]
        assert init["command"][-2:] == ["xchat.mesh.bootstrap", svc]
        env = {e["name"]: e.get("value") for e in init["env"]}
        assert env["XCHAT_NATS_USER"] == "bootstrap"
        assert all(m["name"] != "nats" for m in init["volumeMounts"])  # not the service's password either
        vol = next(v for v in pod["volumes"] if v["name"] == "bootstrap")
        assert vol["secret"]["items"] == [{"key": "bootstrap", "path": "password"}]


def test_network_policies() -> None:
    objs = objects()
    nats = get(objs, "NetworkPolicy", "m-nats")
    services = get(objs, "NetworkPolicy", "m-services")
    assert nats["metadata"]["ownerReferences"]
    rules = {r["ports"][0]["port"]: r["from"] for r in nats["spec"]["ingress"]}
    assert set(rules) == {4222, 6222, 8222}
    assert rules[4222][0]["podSelector"]["matchExpressions"][0]["values"] == ["auth", "keys", "relay", "mailbox"]
    assert rules[6222][0]["podSelector"]["matchExpressions"][0]["values"] == ["nats"]
    assert rules[8222][0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/component": "operator"}}
    assert all(r["from"] for r in nats["spec"]["ingress"])  # nothing open to everyone
    (grpc,) = services["spec"]["ingress"]
    # gRPC, health and /metrics (counts only: xchat.core.metrics has no per-user label).
    assert "from" not in grpc and [p["port"] for p in grpc["ports"]] == [50051, 50052, 9090]


def test_each_service_pod_mounts_its_own_certificate() -> None:
    objs = objects(tls={"enabled": True})

    def tls_secret(pod: dict) -> str:
        return next(v["secret"]["secretName"] for v in pod["volumes"] if v["name"] == "tls")

    # Per region: a region added or removed leaves every other region's certificates (and pods) alone.
    for region in ("eu", "us"):
        assert tls_secret(get(objs, "StatefulSet", f"m-nats-{region}")["spec"]["template"]["spec"]) == f"m-nats-{region}-tls"
        for svc in ("auth", "keys", "relay", "mailbox"):
            assert tls_secret(get(objs, "Deployment", f"m-{svc}-{region}")["spec"]["template"]["spec"]) == f"m-{svc}-{region}-tls"
    # A certificate named in the CR serves everything (the operator cannot issue from its CA).
    named = objects(tls={"enabled": True, "secretName": "mine"})
    assert tls_secret(get(named, "Deployment", "m-relay-eu")["spec"]["template"]["spec"]) == "mine"


def test_adding_a_region_changes_no_pod_template_of_the_others() -> None:
    """Region d added (or removed): the NATS URL list and route list change, but through the
    ConfigMap and the reloaded config, so no existing region's pods restart."""
    three = objects(tls={"enabled": True})
    four = objects(tls={"enabled": True}, regions=[{"name": "eu"}, {"name": "us"}, {"name": "ap"}, {"name": "d"}])
    for obj in three:
        if obj["kind"] in ("StatefulSet", "Deployment"):
            after = get(four, obj["kind"], obj["metadata"]["name"])
            assert after["spec"]["template"] == obj["spec"]["template"], obj["metadata"]["name"]
    assert "m-nats-d" in get(four, "ConfigMap", "m-nats-urls")["data"]["eu"]
