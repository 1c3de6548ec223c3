"""The operator's gRPC health probe against real running services (the local mesh):
no pods run under envtest, so this is where the probe meets a real server."""

from __future__ import annotations

from xchat.mesh.local import LocalMesh
from xchat_operator.probes import grpc_check


async def test_probe_sees_serving_services_over_tls_and_refuses_a_wrong_name(fresh_mesh_factory) -> None:
    mesh: LocalMesh = fresh_mesh_factory(tls=True, regions=("solo",), replicas=1)
    endpoint = mesh.regions["solo"].endpoint
    roots = mesh.root_certificates
    good = await _first_ok(lambda: grpc_check(endpoint, 3.0, root_certificates=roots, server_name="localhost"))
    assert good.ok and good.reason == "Serving"
    wrong_name = await grpc_check(endpoint, 3.0, root_certificates=roots, server_name="evil.example")
    assert not wrong_name.ok and wrong_name.reason == "Unreachable"
    plaintext = await grpc_check(endpoint, 3.0)
    assert not plaintext.ok and plaintext.reason == "Unreachable"


async def test_probe_reports_not_serving_when_jetstream_is_gone(fresh_mesh_factory) -> None:
    import asyncio

    mesh: LocalMesh = fresh_mesh_factory(regions=("solo",), replicas=1)
    endpoint = mesh.regions["solo"].endpoint
    assert (await _first_ok(lambda: grpc_check(endpoint, 3.0))).ok
    for proc in mesh.regions["solo"].nats:
        proc.kill()
    for _ in range(50):
        check = await grpc_check(endpoint, 3.0)
        if check.reason == "NotServing":
            break
        await asyncio.sleep(0.3)
    assert check.reason == "NotServing" and not check.ok


async def _first_ok(check, within: float = 30.0):
    """The first passing probe: a just-started mesh on a busy machine may miss one 3 s probe."""
    import asyncio
    import time

    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result.ok or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.5)
