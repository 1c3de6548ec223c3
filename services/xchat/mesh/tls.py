"""A throw-away PKI for the local mesh: one CA, one certificate per role.

``server.pem`` serves NATS (client port and mutual-TLS routes); each NATS
user (``all``, ``auth``, ..., ``bootstrap``, ``admin``) gets its own client
certificate, which its processes present to NATS (the client port verifies
them) and, for service roles, also serve gRPC with. The CA key is kept
(0600) so a role added later gets a certificate from the same CA.

The deployed shape gets its certificates from the operator (or cert-manager);
the local mesh makes its own so that the same TLS code paths (gRPC server
credentials, NATS client and route TLS, SDK root certificates) run on every
``xchat up`` and in the tests.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xchat local mesh"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    """Written 0600 from the first byte (no window where another user could read it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)


@contextmanager
def _issuing(directory: Path) -> Iterator[None]:
    """One issuer at a time per directory, across processes and threads.

    Without it two processes that both found a role's files missing (the bench's
    receiver process and its parent) each wrote a key and then a certificate, and
    the files could end up holding one's key and the other's certificate: NATS
    then refused to start with ``KEY_VALUES_MISMATCH``.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(directory / ".issuing.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def make_local_pki(directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """Creates (or reuses) ``ca.pem``, ``server.pem`` and ``server-key.pem`` in ``directory``."""
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    if all(f.exists() for f in (files.ca, files.cert, files.key, directory / "ca-key.pem")):
        return files
    with _issuing(directory):
        if not all(f.exists() for f in (files.ca, files.cert, files.key, directory / "ca-key.pem")):
            _make_ca(directory, files, hosts)
    return files


def _make_ca(directory: Path, files: TlsFiles, hosts: tuple[str, ...]) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("xchat local CA"))
        .issuer_name(_name("xchat local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(directory / "ca-key.pem", _pem_key(ca_key))
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _issue(files.ca, directory / "ca-key.pem", hosts[0], hosts, files.cert, files.key)


def role_files(pki: TlsFiles, role: str, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """The client certificate of NATS user ``role`` (made on first use; CN = the role)."""
    directory = pki.ca.parent
    files = TlsFiles(pki.ca, directory / f"{role}.pem", directory / f"{role}-key.pem")
    if not (files.cert.exists() and files.key.exists()):
        with _issuing(directory):
            if not (files.cert.exists() and files.key.exists()):
                _issue(pki.ca, directory / "ca-key.pem", role, hosts, files.cert, files.key)
    return files


def _issue(ca_file: Path, ca_key_file: Path, common_name: str, hosts: tuple[str, ...], cert_file: Path, key_file: Path) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        # Server for clients, and both ends of NATS route (mutual) TLS.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # Key first, certificate last, each whole (renamed into place): readers that take
    # "the certificate exists" to mean "the pair is ready" never see half of it.
    _write_private(key_file.with_name(key_file.name + ".new"), _pem_key(key))
    os.replace(key_file.with_name(key_file.name + ".new"), key_file)
    cert_file.with_name(cert_file.name + ".new").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(cert_file.with_name(cert_file.name + ".new"), cert_file)
