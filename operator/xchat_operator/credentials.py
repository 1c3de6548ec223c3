"""Secret material the operator generates once per mesh.

* NATS passwords, one per service user plus the bootstrap, jsadmin, jsmeta and route users
  (nats.conf gets bcrypt hashes of the user passwords, see ``natsconfig``);
* the access-token Ed25519 key pair (the private half is mounted into auth only);
* optionally a self-signed CA, a certificate for the NATS servers, and one per
  service naming only that service's Services (when ``spec.tls.enabled`` and no
  ``secretName`` is given).

Generated values are written once and then kept: ``reconcile`` never
overwrites an existing Secret's data (rotating a key is a deliberate act:
delete the Secret), with one exception: a generated certificate is re-issued
from the same CA (same trust for clients) when its names change or when it has
less than ``RENEW_BEFORE`` left (``expires_within``). The CA itself lives
``CA_VALIDITY`` and is never replaced by the operator (clients pin it); a
certificate never outlives its CA. Production meshes with their own PKI use
cert-manager instead (``tls.secretName``; docs/operator.md).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import secrets as _secrets
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import names
from .spec import SERVICE_NAMES

PASSWORD_BYTES = 24  # 192 bits, URL-safe so it can sit in a route URL
CERT_VALIDITY = datetime.timedelta(days=365)
# Clients pin the CA (the SDK's ca.crt): it outlives many certificate renewals.
CA_VALIDITY = datetime.timedelta(days=3650)
# Re-issued this long before expiry: room for several resync passes and a rolling restart, and
# the margin cert-manager's default renewBefore (a third of 90 days) also leaves.
RENEW_BEFORE = datetime.timedelta(days=30)


def nats_passwords() -> dict[str, str]:
    users = (*SERVICE_NAMES, names.BOOTSTRAP_USER, names.JSADMIN_USER, names.JSMETA_USER, names.ROUTE_USER)
    return {user: _secrets.token_urlsafe(PASSWORD_BYTES) for user in users}


def token_key_pair() -> tuple[str, str]:
    """(private seed, public key), each 32 raw bytes, base64-encoded."""
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed).decode(), base64.b64encode(pub).decode()


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def new_ca(common_name: str) -> tuple[str, str]:
    """A self-signed CA: (certificate PEM, private key PEM)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ca.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(ca_key).decode()


def issue(ca_pem: str, ca_key_pem: str, common_name: str, dns_names: Sequence[str],
          ips: Sequence[str] = (), validity: datetime.timedelta = CERT_VALIDITY) -> tuple[str, str]:
    """A certificate signed by the CA: (certificate PEM, private key PEM).

    It carries both serverAuth and clientAuth usages: NATS routes authenticate
    each other with it (mutual TLS).
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + validity, ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key).decode()


def expires_within(cert_pem: str, window: datetime.timedelta = RENEW_BEFORE,
                   now: datetime.datetime | None = None) -> bool:
    """True when the certificate ends within ``window`` (or already has, or does not parse)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return True
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return cert.not_valid_after_utc - now <= window


def dns_names_of(cert_pem: str) -> list[str]:
    """The DNS names a certificate carries (its SANs)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))


def tls_bundle(common_name: str, dns_names: Sequence[str], ips: Sequence[str] = (),
               ca: tuple[str, str] | None = None) -> dict[str, str]:
    """``tls.crt``/``tls.key``/``ca.crt``/``ca.key`` PEM; a new CA unless ``ca`` (cert, key) is given.

    The CA key is kept in the Secret so the certificate can be re-issued with more
    names (a region added) without changing the CA that clients trust.
    """
    ca_pem, ca_key_pem = ca or new_ca(common_name)
    crt, key = issue(ca_pem, ca_key_pem, common_name, dns_names, ips)
    return {"tls.crt": crt, "tls.key": key, "ca.crt": ca_pem, "ca.key": ca_key_pem}


def service_dns_names(mesh: str, namespace: str, cluster_domain: str, service: str, regions: Sequence[str]) -> list[str]:
    """The names of one service's Services in every region (no wildcard): its gRPC
    server certificate and its NATS client certificate."""
    out: list[str] = []
    for region in regions:
        host = names.service_workload(mesh, service, region)
        out += [host, f"{host}.{namespace}", f"{host}.{namespace}.svc", f"{host}.{namespace}.svc.{cluster_domain}"]
    return out


def nats_dns_names(mesh: str, namespace: str, cluster_domain: str, region: str) -> list[str]:
    """One region's NATS certificate: the namespace's Services (client Services of
    every region, present and future) and that region's NATS pods, nothing of other regions."""
    return mesh_dns_names(mesh, namespace, cluster_domain, [region])


def mesh_dns_names(mesh: str, namespace: str, cluster_domain: str, regions: Sequence[str]) -> list[str]:
    """Wildcards covering every Service of the namespace and every NATS pod of the mesh."""
    out = [f"*.{namespace}.svc.{cluster_domain}", f"*.{namespace}.svc", f"*.{namespace}", "localhost"]
    for region in regions:
        headless = names.nats_headless_service(mesh, region)
        out.append(f"*.{headless}.{namespace}.svc.{cluster_domain}")
    return out
