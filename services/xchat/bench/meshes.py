"""The system under test: a private three-region loopback mesh with TLS on every hop.

``BenchMesh`` wraps ``xchat.mesh.local.LocalMesh(tls=True, nats_auth=True)``
(the same code and shape as ``xchat up``) and adds what the bench reads from outside, as an operator
would: the server processes' CPU and memory, an admin NATS connection for the
raw JetStream baselines, and the bytes JetStream stores. The mesh is a context
manager: every process it started is reaped on exit, error or Ctrl-C.
"""

from __future__ import annotations

import json
import ssl
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

import nats
from nats.aio.client import Client as Nats

from xchat.bench.resources import CpuMeter
from xchat.mesh.local import LocalMesh

REGIONS = ("a", "b", "c")
# The bench queues far more for one device than a person would (backlog drain).
MAILBOX_QUOTA = 1_000_000


class BenchMesh:
    def __init__(self, workdir: Path | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="xchat-bench-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        # The shape ``xchat up`` starts by default: TLS on every hop, one NATS user per service.
        self.mesh = LocalMesh(workdir / "mesh", regions=REGIONS, tls=True, nats_auth=True, mailbox_quota=MAILBOX_QUOTA)
        self.started_in_s = 0.0

    def __enter__(self) -> BenchMesh:
        started = time.monotonic()
        try:
            self.mesh.start()  # reaps what it started if start-up fails
        except BaseException:
            self._cleanup()
            raise
        self.started_in_s = time.monotonic() - started
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self.mesh.stop()
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- what clients see ------------------------------------------------

    @property
    def root_certificates(self) -> bytes:
        roots = self.mesh.root_certificates
        assert roots is not None, "the bench mesh always runs with TLS"
        return roots

    def endpoints(self, region: str) -> list[str]:
        """gRPC endpoints with ``region`` first (the device's home region)."""
        return self.mesh.endpoints(region)

    @property
    def cert_files(self) -> tuple[Path, Path, Path]:
        """(CA, certificate, key) of the mesh's PKI, for the in-process gRPC echo baseline."""
        tls = self.mesh.tls
        assert tls is not None
        return tls.ca, tls.cert, tls.key

    # -- what an operator sees --------------------------------------------

    def server_meter(self) -> CpuMeter:
        """CPU of every server process: the nats-servers and the service processes of all regions."""
        nats_pids = [p.pid for r in self.mesh.regions.values() for p in r.nats if p.pid is not None]
        service_pids = [r.services.pid for r in self.mesh.regions.values() if r.services is not None and r.services.pid]
        return CpuMeter({"nats": nats_pids, "services": [p for p in service_pids if p is not None]})

    def nats_messages(self) -> int:
        """Messages every nats-server has received so far (``/varz`` ``in_msgs``, summed).

        Client publishes, route traffic and Raft replication alike: the difference
        around a phase, per delivered message, is the structural count of what one
        message makes the cluster do (issue 18 went from 27.8 to 17.2 at 1 in flight).
        """
        total = 0
        for node in self.mesh.all_nodes:
            with urllib.request.urlopen(f"http://{node.host}:{node.http_port}/varz", timeout=5) as reply:
                total += int(json.load(reply)["in_msgs"])
        return total

    def service_pid(self, region: str) -> int:
        services = self.mesh.regions[region].services
        if services is None or services.pid is None:
            raise RuntimeError(f"region {region} has no service process")
        return services.pid

    async def nats(self, region: str = "a") -> Nats:
        """An admin NATS connection (TLS, trusting the mesh CA) to ``region``'s servers first."""
        # Meshes whose NATS client port verifies client certificates hand out a context
        # with the admin role's certificate; older ones only need the CA.
        role_tls = getattr(self.mesh, "nats_tls", None)
        context: ssl.SSLContext = role_tls("admin") if role_tls is not None else ssl.create_default_context(cafile=str(self.cert_files[0]))

        async def quiet(_exc: Exception) -> None:
            """nats-py logs every connection error with a traceback; the failing call raises anyway."""

        return await nats.connect(
            self.mesh.nats_urls(region), tls=context, allow_reconnect=False, connect_timeout=5, error_cb=quiet,
            **self.mesh.admin_credentials,
        )


async def stored_bytes(nc: Nats) -> int:
    """Bytes held by every JetStream stream (one replica's view; R3 keeps three copies)."""
    total = 0
    for info in await nc.jetstream().streams_info():
        if info.state is not None:
            total += int(info.state.bytes)
    return total


async def stored_messages(nc: Nats) -> int:
    total = 0
    for info in await nc.jetstream().streams_info():
        if info.state is not None:
            total += int(info.state.messages)
    return total
