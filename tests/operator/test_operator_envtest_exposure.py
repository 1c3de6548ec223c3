"""External exposure and certificate renewal (``spec.exposure``; ``xchat_operator.exposure``, ``certificates``).

Builders are checked in memory; the rest runs on the real API server with the
in-process operator: the external Services appear (and go when exposure is
removed), the generated service certificates carry ``<service>.<host>``, the
CRD refuses bad exposure with readable messages, a certificate near its end is
re-issued from the same CA and the pods that mount it are rolled (their
template's certificate digest changes).
"""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from xchat_operator import builders, certificates, credentials, exposure, names
from xchat_operator.errors import KubeError
from xchat_operator.spec import parse_mesh
from xchat_operator.testing import NS, eventually, mesh_manifest, settle_workloads

PASSWORDS = {"auth": "pa", "keys": "pk", "relay": "pr", "mailbox": "pm", "route": "proute", "bootstrap": "pb"}
EXPOSED = {"type": "LoadBalancer", "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
           "regions": [{"name": "a", "hosts": ["a.chat.example.com"]}, {"name": "b", "hosts": ["b.chat.example.com"]}]}
CERT_MANAGER_EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "cert-manager-certificate.yaml"


def _spec(**spec: object):
    body = mesh_manifest("ex", **spec)
    body["metadata"].update(uid="u1", generation=1)
    return parse_mesh(body)


def _secret_pem(kube, name: str, key: str = "tls.crt") -> str:
    return base64.b64decode(kube.get("Secret", NS, name)["data"][key]).decode()


# --- in memory -----------------------------------------------------------------------------------


def test_one_external_service_per_service_and_exposed_region_selecting_that_services_pods() -> None:
    spec = _spec(tls={"enabled": True}, exposure=EXPOSED)
    objs = builders.desired_objects(spec, PASSWORDS)
    external = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service" and o["metadata"]["name"].endswith("-ext")}
    assert sorted(external) == sorted(f"ex-{s}-{r}-ext" for s in ("auth", "keys", "relay", "mailbox") for r in "ab")
    mailbox_a = external["ex-mailbox-a-ext"]
    internal = builders.find(objs, "Service", "ex-mailbox-a")
    assert internal is not None
    assert mailbox_a["spec"]["selector"] == internal["spec"]["selector"]
    assert mailbox_a["spec"]["type"] == "LoadBalancer" and mailbox_a["spec"]["ports"][0]["port"] == names.GRPC_PORT
    assert mailbox_a["metadata"]["annotations"][exposure.EXTERNAL_DNS_ANNOTATION] == "mailbox.a.chat.example.com"
    assert mailbox_a["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"] == "nlb"
    assert mailbox_a["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert exposure.names_for(spec, "mailbox") == ["mailbox.a.chat.example.com", "mailbox.b.chat.example.com"]


def test_a_region_that_does_not_serve_is_not_exposed_and_no_exposure_means_no_external_service() -> None:
    draining = _spec(tls={"enabled": True}, exposure=EXPOSED,
                     regions=[{"name": "a", "mode": "Draining"}, {"name": "b"}, {"name": "c"}])
    names_ = [o["metadata"]["name"] for o in builders.desired_objects(draining, PASSWORDS) if o["kind"] == "Service"]
    assert not [n for n in names_ if n.endswith("-a-ext")] and "ex-auth-b-ext" in names_
    assert not [o for o in builders.desired_objects(_spec(), PASSWORDS) if o["metadata"]["name"].endswith("-ext")]


def test_certificate_renewal_window_and_the_ca_outliving_its_certificates() -> None:
    ca, ca_key = credentials.new_ca("m")
    fresh, _ = credentials.issue(ca, ca_key, "auth", ["auth"])
    short, _ = credentials.issue(ca, ca_key, "auth", ["auth"], validity=datetime.timedelta(days=2))
    assert not credentials.expires_within(fresh) and credentials.expires_within(short)
    assert credentials.expires_within("not a certificate")
    ca_end = x509.load_pem_x509_certificate(ca.encode()).not_valid_after_utc
    long, _ = credentials.issue(ca, ca_key, "auth", ["auth"], validity=datetime.timedelta(days=20_000))
    assert x509.load_pem_x509_certificate(long.encode()).not_valid_after_utc <= ca_end  # never outlives its CA


def test_the_certificate_digest_covers_certificate_and_ca_but_not_the_key() -> None:
    base = {"data": {"tls.crt": "Y3J0", "ca.crt": "Y2E=", "tls.key": "a2V5"}}
    assert certificates.digest(base) == certificates.digest({"data": {**base["data"], "tls.key": "b3RoZXI="}})
    assert certificates.digest(base) != certificates.digest({"data": {**base["data"], "tls.crt": "bmV3"}})


def test_the_cert_manager_example_names_what_the_operator_reads() -> None:
    """docs/cert-manager-certificate.yaml: a Certificate whose Secret holds tls.crt, tls.key and ca.crt."""
    docs = [d for d in yaml.safe_load_all(CERT_MANAGER_EXAMPLE.read_text()) if d]
    certificate = next(d for d in docs if d["kind"] == "Certificate")
    mesh = next(d for d in docs if d["kind"] == "XChatMesh")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert certificate["spec"]["secretName"] == mesh["spec"]["tls"]["secretName"]
    assert mesh["spec"]["tls"]["enabled"] is True
    # cert-manager writes tls.crt and tls.key always, ca.crt for CA-backed issuers: the three keys the operator mounts.
    issuer = next(d for d in docs if d["kind"] in ("Issuer", "ClusterIssuer") and d["metadata"]["name"] ==
                  certificate["spec"]["issuerRef"]["name"])
    assert "ca" in issuer["spec"]
    from xchat_operator.reconcile import TLS_SECRET_KEYS

    assert TLS_SECRET_KEYS == ("tls.crt", "tls.key", "ca.crt")
    assert "{tls.crt,tls.key,ca.crt}" in CERT_MANAGER_EXAMPLE.read_text().replace(" ", "")
    # Every name the operator would put in a service certificate is in the example's: in-cluster and external.
    spec = parse_mesh({**mesh, "metadata": {**mesh["metadata"], "uid": "u"}})
    sans = set(certificate["spec"]["dnsNames"])
    for service in ("auth", "keys", "relay", "mailbox"):
        for region in spec.regions:
            host = f"{names.service_workload(spec.name, service, region.name)}.{spec.namespace}.svc.cluster.local"
            assert host in sans or f"*.{spec.namespace}.svc.cluster.local" in sans
        assert set(exposure.names_for(spec, service)) <= sans
    assert spec.exposure is not None


# --- real API server --------------------------------------------------------------------------------


@pytest.mark.envtest
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"exposure": EXPOSED}, "exposure needs tls.enabled: true"),
        ({"tls": {"enabled": True}, "exposure": {"regions": [{"name": "z", "hosts": ["z.example.com"]}]}},
         "exposure.regions may only name regions listed in spec.regions"),
        ({"tls": {"enabled": True}, "exposure": {"regions": [{"name": "a", "hosts": ["*.example.com"]}]}},
         "exposure hosts must be lowercase DNS names"),
        ({"tls": {"enabled": True}, "exposure": {"regions": [{"name": "a", "hosts": ["https://a.example.com:443"]}]}},
         "exposure hosts must be lowercase DNS names"),
        ({"tls": {"enabled": True}, "exposure": {"type": "ClusterIP", "regions": [{"name": "a", "hosts": ["a.example.com"]}]}},
         'supported values: "LoadBalancer", "NodePort"'),
    ],
    ids=["without-tls", "unknown-region", "wildcard-host", "url-not-host", "bad-type"],
)
def test_bad_exposure_is_refused_with_a_readable_message(kube, envtest_env, spec: dict, message: str) -> None:
    with pytest.raises(KubeError) as err:
        kube.create(mesh_manifest("badexp", namespace="elsewhere", **spec))
    assert err.value.status == 422 and message in str(err.value), err.value


@pytest.mark.envtest
def test_exposed_services_appear_with_matching_certificate_names_and_go_away(kube, make_mesh) -> None:
    make_mesh("exp", tls={"enabled": True}, exposure=EXPOSED)

    def exposed() -> dict:
        found = {s["metadata"]["name"]: s for s in kube.list("Service", NS, labels={names.LABEL_MESH: "exp"})
                 if s["metadata"]["name"].endswith("-ext")}
        assert len(found) == 8, sorted(found)
        return found

    services = eventually(exposed, 60, what="8 external Services")
    assert services["exp-relay-b-ext"]["spec"]["type"] == "LoadBalancer"
    assert services["exp-relay-b-ext"]["metadata"]["annotations"][exposure.EXTERNAL_DNS_ANNOTATION] == "relay.b.chat.example.com"

    def sans(service: str, region: str = "a") -> list[str]:
        return credentials.dns_names_of(_secret_pem(kube, names.service_tls_secret("exp", service, region)))

    # Per region: each region's certificate names that region's external names only.
    eventually(lambda: "mailbox.a.chat.example.com" in sans("mailbox")
               and "mailbox.b.chat.example.com" in sans("mailbox", "b"), 60,
               what="external names in mailbox's certificates")
    assert "mailbox.b.chat.example.com" not in sans("mailbox") and "mailbox.a.chat.example.com" not in sans("mailbox", "b")
    assert "auth.a.chat.example.com" in sans("auth") and not [n for n in sans("auth") if n.startswith("mailbox.")]
    assert "exp-mailbox-a.xchat.svc.cluster.local" in sans("mailbox")  # in-cluster names kept

    # A new host: the certificate follows, from the same CA.
    ca_before = _secret_pem(kube, names.service_tls_secret("exp", "keys", "a"), "ca.crt")
    kube.merge_patch("XChatMesh", NS, "exp", {"spec": {"exposure": {"regions": [
        {"name": "a", "hosts": ["a.chat.example.com", "eu.chat.example.com"]}]}}})
    eventually(lambda: "keys.eu.chat.example.com" in sans("keys") and "keys.b.chat.example.com" not in sans("keys", "b"),
               60, what="the new host in keys' certificate")
    assert _secret_pem(kube, names.service_tls_secret("exp", "keys", "a"), "ca.crt") == ca_before
    eventually(lambda: "exp-auth-b-ext" not in exposed_now(kube), 60, what="region b's external Services pruned")

    # No exposure: external Services pruned, certificates back to in-cluster names.
    kube.merge_patch("XChatMesh", NS, "exp", {"spec": {"exposure": None}})
    eventually(lambda: not exposed_now(kube), 60, what="every external Service pruned")
    eventually(lambda: not [n for n in sans("relay") if n.endswith("chat.example.com")], 60,
               what="relay's certificate without external names")


def exposed_now(kube) -> set[str]:
    return {s["metadata"]["name"] for s in kube.list("Service", NS, labels={names.LABEL_MESH: "exp"})
            if s["metadata"]["name"].endswith("-ext")}


@pytest.mark.envtest
def test_a_certificate_near_its_end_is_renewed_and_its_pods_rolled(kube, make_mesh) -> None:
    """Fails without renewal: the 2-day certificate stays (and would expire in the pods)."""
    make_mesh("ren", tls={"enabled": True})
    secret = names.service_tls_secret("ren", "relay", "a")
    eventually(lambda: kube.get("Secret", NS, secret), 60, what="relay's certificate")

    def template_digest() -> str:
        deployment = kube.get("Deployment", NS, "ren-relay-a")
        assert deployment is not None
        return deployment["spec"]["template"]["metadata"]["annotations"][certificates.TLS_HASH_ANNOTATION]

    eventually(lambda: template_digest() == certificates.digest(kube.get("Secret", NS, secret)), 60,
               what="the Deployment's template names its certificate")
    before = template_digest()
    ca, ca_key = _secret_pem(kube, names.generated_tls_secret("ren"), "ca.crt"), _secret_pem(
        kube, names.generated_tls_secret("ren"), "ca.key")
    short, key = credentials.issue(ca, ca_key, "relay", ["relay"], validity=datetime.timedelta(days=2))
    encode = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    kube.merge_patch("Secret", NS, secret, {"data": {"tls.crt": encode(short), "tls.key": encode(key)}})

    def renewed() -> bool:
        pem = _secret_pem(kube, secret)
        end = x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc
        return end - datetime.datetime.now(datetime.timezone.utc) > credentials.RENEW_BEFORE

    eventually(renewed, 60, what="relay's certificate renewed")
    assert _secret_pem(kube, secret, "ca.crt") == ca  # same CA: clients keep trusting the mesh
    assert "ren-relay-a.xchat.svc.cluster.local" in credentials.dns_names_of(_secret_pem(kube, secret))
    # The roll goes one region at a time once the others are rolled out: the test plays the controllers.
    eventually(lambda: settle_workloads(kube, NS, "ren") >= 0 and template_digest() not in (before, certificates.digest(
        {"data": {"tls.crt": encode(short), "ca.crt": encode(ca)}})), 90, what="relay's pods rolled onto the new certificate")
