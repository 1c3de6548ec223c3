"""TLS on every hop of a mesh started with tls=True: SDK→gRPC, services→NATS, NATS routes (mutual)."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
from pathlib import Path

import nats
import nats.errors
import pytest

from xchat.client import Client, ServiceUnavailable
from xchat.mesh.local import LocalMesh


def _varz(mesh: LocalMesh) -> dict:
    node = mesh.all_nodes[0]
    with urllib.request.urlopen(f"http://{node.host}:{node.http_port}/varz", timeout=2) as reply:
        return json.loads(reply.read())


async def test_tls_mesh_delivers_and_refuses_plaintext(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(tls=True)
    roots = mesh.root_certificates
    assert roots is not None
    varz = _varz(mesh)
    assert varz["tls_required"] is True
    assert varz["cluster"]["tls_required"] is True and varz["cluster"]["tls_verify"] is True

    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a"), root_certificates=roots) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("c"), root_certificates=roots
    ) as bob:
        await alice.register("alice")
        await bob.register("bob")
        await alice.send("bob", "over TLS")
        inbox = bob.messages()
        assert (await asyncio.wait_for(anext(inbox), 10)).text == "over TLS"
        await inbox.aclose()

    # A plaintext gRPC client cannot talk to the services ...
    async with await Client.open(tmp_path / "p.db", mesh.endpoints("a"), call_timeout=1.0) as plain:
        with pytest.raises(ServiceUnavailable):
            await plain.register("mallory")
    # ... and a client that does not trust the mesh CA cannot reach NATS.
    with pytest.raises((nats.errors.Error, ssl.SSLError, OSError)):
        nc = await nats.connect(
            mesh.nats_urls("a")[0], tls=ssl.create_default_context(), allow_reconnect=False, connect_timeout=2
        )
        await nc.close()


async def test_plaintext_health_port_serves_only_health(fresh_mesh_factory) -> None:
    """Kubelet's gRPC probes cannot speak TLS: a health-only plaintext port answers them."""
    import grpc
    import grpc.aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from xchat.mesh.local import free_port
    from xchat.v1 import relay_pb2, relay_pb2_grpc

    health_address = f"127.0.0.1:{free_port()}"
    mesh: LocalMesh = fresh_mesh_factory(
        regions=("solo",), replicas=1, tls=True, extra_env={"XCHAT_HEALTH_LISTEN": health_address}
    )
    async with grpc.aio.insecure_channel(health_address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await relay_pb2_grpc.RelayStub(channel).Send(relay_pb2.SendRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert mesh.tls is not None
