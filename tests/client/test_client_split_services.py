"""Each service is its own gRPC server, runnable alone (the deployed shape), and the SDK
reaches them through a per-service endpoint mapping."""

from __future__ import annotations

import asyncio
from pathlib import Path

from xchat.client import Client
from xchat.mesh.local import LocalMesh


async def test_four_separate_service_processes_serve_the_sdk(mesh: LocalMesh, tmp_path: Path) -> None:
    endpoints, processes = await asyncio.to_thread(mesh.start_split_services, "b")
    try:
        assert len(set(endpoints.values())) == 4
        async with await Client.open(tmp_path / "a.db", [endpoints, mesh.regions["a"].endpoint]) as alice, await Client.open(
            tmp_path / "b.db", [mesh.regions["c"].endpoint]
        ) as bob:
            await alice.register("split-alice")
            await bob.register("split-bob")
            await alice.send("split-bob", "from separately deployed services")
            inbox = bob.messages()
            assert (await asyncio.wait_for(anext(inbox), 10)).text == "from separately deployed services"
            await inbox.aclose()
            assert alice.endpoint.startswith("auth=")
    finally:
        for proc in processes:
            proc.stop()
