"""With TLS on, the NATS client port verifies client certificates: a process that
trusts the mesh CA but presents no certificate (or one from another CA) is
refused, while every service (each with its own role certificate) still serves."""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path

import nats
import nats.errors
import pytest

from xchat.mesh.local import LocalMesh
from xchat.mesh.tls import make_local_pki, role_files


async def _refused(mesh: LocalMesh, tls: ssl.SSLContext) -> None:
    with pytest.raises((nats.errors.Error, ssl.SSLError, OSError)):
        nc = await nats.connect(
            mesh.nats_urls("solo")[0], tls=tls, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0,
            **mesh.admin_credentials,
        )
        await nc.close()


async def test_nats_refuses_clients_without_a_mesh_certificate(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(tls=True, nats_auth=True, regions=("solo",), replicas=1)
    assert mesh.tls is not None
    node = mesh.all_nodes[0]
    with urllib.request.urlopen(f"http://{node.host}:{node.http_port}/varz", timeout=2) as reply:
        assert json.loads(reply.read())["tls_verify"] is True
    # Right password, trusts the CA, but no client certificate: refused.
    await _refused(mesh, ssl.create_default_context(cafile=str(mesh.tls.ca)))
    # A certificate from another CA: refused.
    stranger = role_files(make_local_pki(tmp_path / "other-ca"), "admin")
    foreign = ssl.create_default_context(cafile=str(mesh.tls.ca))
    foreign.load_cert_chain(str(stranger.cert), str(stranger.key))
    await _refused(mesh, foreign)
    # The mesh's own role certificate: accepted (the services, started above, hold theirs).
    nc = await nats.connect(mesh.nats_urls("solo")[0], tls=mesh.nats_tls("admin"), allow_reconnect=False, **mesh.admin_credentials)
    try:
        assert (await nc.jetstream().account_info()).streams >= 1
    finally:
        await nc.close()
