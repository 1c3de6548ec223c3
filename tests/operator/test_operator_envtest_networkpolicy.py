"""NetworkPolicies and the NATS least-privilege objects on a real kube-apiserver:
the operator creates them (the API server accepts their schema), restores them
when deleted, and the rendered nats.conf holds bcrypt hashes and verifies clients."""

from __future__ import annotations

import base64
import json

import pytest

from xchat_operator.testing import NS, eventually

pytestmark = pytest.mark.envtest


def test_network_policies_and_hashed_users(kube, make_mesh) -> None:
    make_mesh("np", tls={"enabled": True})
    nats = eventually(lambda: kube.get("NetworkPolicy", NS, "np-nats"), 60, what="nats NetworkPolicy")
    services = eventually(lambda: kube.get("NetworkPolicy", NS, "np-services"), 60, what="services NetworkPolicy")
    ports = sorted(r["ports"][0]["port"] for r in nats["spec"]["ingress"])
    assert ports == [4222, 6222, 8222] and all(r.get("from") for r in nats["spec"]["ingress"])
    assert services["spec"]["podSelector"]["matchExpressions"][0]["values"] == ["auth", "keys", "relay", "mailbox"]
    # Deleted by someone else: it comes back.
    old_uid = nats["metadata"]["uid"]
    kube.delete("NetworkPolicy", NS, "np-nats")
    eventually(lambda: (kube.get("NetworkPolicy", NS, "np-nats") or {}).get("metadata", {}).get("uid")
               not in (None, old_uid), 60, what="recreated NetworkPolicy")

    creds = eventually(lambda: kube.get("Secret", NS, "np-nats-credentials"), 60, what="credentials")
    passwords = {k: base64.b64decode(v).decode() for k, v in creds["data"].items()}
    assert {"auth", "keys", "relay", "mailbox", "bootstrap", "jsadmin", "jsmeta", "route"} <= set(passwords)
    config = eventually(lambda: kube.get("Secret", NS, "np-nats-a-config"), 60, what="nats config")
    conf = base64.b64decode(config["data"]["nats.conf"]).decode()
    for user in ("auth", "keys", "relay", "mailbox", "bootstrap", "jsadmin", "jsmeta"):
        assert passwords[user] not in conf, user
    assert conf.count('password: "$2b$') == 7 and conf.count("verify: true") == 2
    # The operator's jsadmin and jsmeta passwords are mounted into no pod (only the operator reads them).
    for kind in ("Deployment", "StatefulSet"):
        for item in kube.list(kind, NS, labels={"xchat.dev/mesh": "np"}):
            template = json.dumps(item["spec"]["template"])
            assert '"jsadmin"' not in template and '"jsmeta"' not in template, item["metadata"]["name"]
    client = kube.get("Service", NS, "np-nats-a")
    assert [p["name"] for p in client["spec"]["ports"]] == ["client"]
    relay = kube.get("Deployment", NS, "np-relay-a")["spec"]["template"]["spec"]
    assert [c["name"] for c in relay["initContainers"]] == ["bootstrap"]


def test_every_service_gets_its_own_certificate_from_the_mesh_ca(kube, make_mesh) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    make_mesh("pc", tls={"enabled": True})
    mesh = eventually(lambda: kube.get("Secret", NS, "pc-tls"), 60, what="mesh certificate")
    ca = x509.load_pem_x509_certificate(base64.b64decode(mesh["data"]["ca.crt"]))
    for svc in ("auth", "keys", "relay", "mailbox"):
        sec = eventually(lambda s=svc: kube.get("Secret", NS, f"pc-{s}-a-tls"), 60, what=f"{svc} certificate")
        assert "ca.key" not in sec["data"]
        cert = x509.load_pem_x509_certificate(base64.b64decode(sec["data"]["tls.crt"]))
        assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == svc
        pub = ca.public_key()
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert f"pc-{svc}-a.{NS}.svc" in dns and not any("*" in d for d in dns)
        assert all(d == f"pc-{svc}-a" or d.startswith(f"pc-{svc}-a.") for d in dns)  # region a's Service only
