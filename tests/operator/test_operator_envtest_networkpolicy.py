"""NetworkPolicies and the NATS least-privilege objects on a real kube-apiserver:
the operator creates them (the API server accepts their schema), restores them
when deleted, and the rendered nats.conf holds bcrypt hashes and verifies clients."""

from __future__ import annotations

import base64

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
    assert {"auth", "keys", "relay", "mailbox", "bootstrap", "route"} <= set(passwords)
    config = eventually(lambda: kube.get("Secret", NS, "np-nats-a-config"), 60, what="nats config")
    conf = base64.b64decode(config["data"]["nats.conf"]).decode()
    for user in ("auth", "keys", "relay", "mailbox", "bootstrap"):
        assert passwords[user] not in conf, user
    assert conf.count('password: "$2b$') == 5 and conf.count("verify: true") == 2
    client = kube.get("Service", NS, "np-nats-a")
    assert [p["name"] for p in client["spec"]["ports"]] == ["client"]
    relay = kube.get("Deployment", NS, "np-relay-a")["spec"]["template"]["spec"]
    assert [c["name"] for c in relay["initContainers"]] == ["bootstrap"]
