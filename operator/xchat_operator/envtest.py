"""A throw-away control plane for tests: etcd + kube-apiserver on loopback.

The envtest approach of controller-runtime, in plain Python: binaries from
``${XCHAT_CACHE:-~/.cache/xchat}/bin`` (built by ``operator/envtest/build-binaries.sh``),
random free ports, a temp data dir, serving certificates made with
``cryptography``, a static admin token, ``--authorization-mode=RBAC`` and
service-account signing flags.  No controller-manager or scheduler runs: no
pods, no garbage collection, no namespace deletion.

Used by ``tests/operator/conftest.py`` and, later, the chart tests.  Every
process started here is reaped by :meth:`EnvTest.stop` (terminate → wait →
kill), which the :func:`running` context manager always calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import os
import secrets as _secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .kube import Kube

BINARIES = ("etcd", "kube-apiserver")
STARTUP_TIMEOUT_SECONDS = 90.0  # a cold kube-apiserver on 2 busy cores takes ~10-20 s
STOP_GRACE_SECONDS = 10.0


class EnvTestError(RuntimeError):
    """The control plane could not be started."""


class BinariesMissing(EnvTestError):
    """etcd / kube-apiserver are not in the cache directory."""


def cache_bin_dir() -> Path:
    root = os.environ.get("XCHAT_CACHE") or str(Path.home() / ".cache" / "xchat")
    return Path(root) / "bin"


def find_binaries(bin_dir: Path | None = None, names: tuple[str, ...] = BINARIES) -> dict[str, Path]:
    bin_dir = bin_dir or cache_bin_dir()
    found = {n: bin_dir / n for n in names}
    missing = [n for n, p in found.items() if not os.access(p, os.X_OK)]
    if missing:
        raise BinariesMissing(f"missing {', '.join(missing)} in {bin_dir}; build them with operator/envtest/build-binaries.sh")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_certs(d: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "envtest-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("kubernetes.default.svc"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = serialization.Encoding.PEM
    files = {
        "ca": d / "ca.crt",
        "cert": d / "apiserver.crt",
        "key": d / "apiserver.key",
        "sa_key": d / "sa.key",
        "sa_pub": d / "sa.pub",
    }
    files["ca"].write_bytes(ca.public_bytes(pem))
    files["cert"].write_bytes(cert.public_bytes(pem))
    files["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    files["sa_key"].write_bytes(sa_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    files["sa_pub"].write_bytes(sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    return files


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_GRACE_SECONDS)


@dataclasses.dataclass
class EnvTest:
    workdir: Path
    url: str
    token: str
    ca_file: Path
    kubeconfig: Path
    bin_dir: Path
    procs: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)
    _owns_workdir: bool = True

    def kube(self, headers: Mapping[str, str] | None = None) -> Kube:
        return Kube(host=self.url, token=self.token, ca_file=str(self.ca_file), headers=headers)

    def stop(self) -> None:
        # Reverse start order: the API server before its etcd.
        for proc in reversed(self.procs):
            _reap(proc)
        self.procs.clear()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self, name: str) -> str:
        p = self.workdir / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""


def start(bin_dir: Path | None = None, *, workdir: Path | None = None,
          timeout: float = STARTUP_TIMEOUT_SECONDS) -> EnvTest:
    bins = find_binaries(bin_dir)
    owns = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="xchat-envtest-")) if workdir is None else workdir
    wd.mkdir(parents=True, exist_ok=True)
    certs = _write_certs(wd)
    token = _secrets.token_hex(16)
    (wd / "tokens.csv").write_text(f'{token},admin,admin-uid,"system:masters"\n')
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    url = f"https://127.0.0.1:{api_port}"
    kubeconfig = wd / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n"
        f"    server: {url}\n    certificate-authority: {certs['ca']}\n"
        "users:\n- name: admin\n  user:\n"
        f"    token: {token}\n"
        "contexts:\n- name: envtest\n  context: {cluster: envtest, user: admin}\n"
        "current-context: envtest\n"
    )
    env = EnvTest(workdir=wd, url=url, token=token, ca_file=certs["ca"], kubeconfig=kubeconfig,
                  bin_dir=bins["etcd"].parent, _owns_workdir=owns)
    try:
        etcd_cmd = [
            str(bins["etcd"]), "--data-dir", str(wd / "etcd"), "--name", "envtest",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"envtest=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",  # test data: durability is not what we measure here
        ]
        env.procs.append(_spawn(etcd_cmd, wd / "etcd.log"))
        api_cmd = [
            str(bins["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={certs['cert']}", f"--tls-private-key-file={certs['key']}",
            f"--client-ca-file={certs['ca']}",
            f"--token-auth-file={wd / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={certs['sa_pub']}",
            f"--service-account-signing-key-file={certs['sa_key']}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            f"--cert-dir={wd / 'certs'}",
            "--endpoint-reconciler-type=none",
        ]
        env.procs.append(_spawn(api_cmd, wd / "kube-apiserver.log"))
        _wait_ready(env, timeout)
    except BaseException:
        env.stop()
        raise
    return env


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_ready(env: EnvTest, timeout: float) -> None:
    kube = env.kube()
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for proc, name in zip(env.procs, ("etcd", "kube-apiserver")):
            if proc.poll() is not None:
                raise EnvTestError(f"{name} exited with {proc.returncode}:\n{env.log(name)[-3000:]}")
        try:
            kube.request("GET", "/readyz")
            # the default namespace appears once the bootstrap controllers ran
            if kube.get("Namespace", None, "default") is not None:
                return
        except Exception as exc:  # not up yet
            last = str(exc)
        time.sleep(0.5)
    raise EnvTestError(f"kube-apiserver not ready after {timeout}s: {last}\n{env.log('kube-apiserver')[-3000:]}")


@contextlib.contextmanager
def running(bin_dir: Path | None = None, **kwargs: Any) -> Iterator[EnvTest]:
    env = start(bin_dir, **kwargs)
    try:
        yield env
    finally:
        env.stop()


def load_yaml_documents(path: Path, namespace_map: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    import yaml  # type: ignore[import-untyped]

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    if namespace_map:
        for d in docs:
            ns = d.get("metadata", {}).get("namespace")
            if ns in namespace_map:
                d["metadata"]["namespace"] = namespace_map[ns]
            for s in d.get("subjects") or ():
                if s.get("namespace") in namespace_map:
                    s["namespace"] = namespace_map[s["namespace"]]
    return docs


def install(kube: Kube, path: Path, *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Server-side apply every document in a YAML file; wait for CRDs to be Established."""
    docs = load_yaml_documents(path)
    for d in docs:
        kube.apply(d, field_manager="envtest")
    for d in docs:
        if d["kind"] == "CustomResourceDefinition":
            wait_established(kube, d["metadata"]["name"], timeout)
    return docs


def wait_established(kube: Kube, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd = kube.get("CustomResourceDefinition", None, name) or {}
        conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or ()}
        if conds.get("Established") == "True":
            return
        time.sleep(0.2)
    raise EnvTestError(f"CRD {name} not established after {timeout}s")
