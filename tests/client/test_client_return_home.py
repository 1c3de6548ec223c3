"""After a failover the SDK goes back to its home region once that region serves again.

Users who stayed on a foreign region for ever (seen in every drill) pay its
longer round trips and crowd it. The transport probes home's gRPC health while
away and moves back after two SERVING answers; the open Sync stream moves too.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from pathlib import Path

from xchat.client import Client
from xchat.client._transport import HOME_HEALTHY_PROBES, HOME_PROBE_INTERVAL_S
from xchat.mesh.local import LocalMesh


def _online_devices(mesh: LocalMesh, region: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{mesh.regions[region].metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = re.search(r"^xchat_online_devices (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def _eventually(check, within: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"timed out after {within:.0f}s waiting for {what}"
        await asyncio.sleep(0.5)


async def _expect(client: Client, inbox, text: str, within: float = 30) -> None:  # type: ignore[no-untyped-def]
    message = await asyncio.wait_for(anext(inbox), within)
    assert message.text == text
    await client.ack(message)


async def test_a_client_returns_home_with_its_sync_stream(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory()
    roots = mesh.root_certificates
    alice = await Client.open(tmp_path / "alice.db", mesh.endpoints("a"), root_certificates=roots)
    bob = await Client.open(tmp_path / "bob.db", mesh.endpoints("c"), root_certificates=roots)
    try:
        await alice.register("alice")
        await bob.register("bob")
        home = alice.endpoint
        inbox = alice.messages()
        await bob.send("alice", "before")
        await _expect(alice, inbox, "before")

        services = mesh.regions["a"].services
        assert services is not None
        await asyncio.to_thread(services.kill)
        await bob.send("alice", "while a is down")
        await _expect(alice, inbox, "while a is down", within=60)
        assert alice.endpoint != home, "failed over"

        await asyncio.to_thread(services.start)
        await asyncio.to_thread(mesh.wait_serving, "a")
        probing = HOME_PROBE_INTERVAL_S * (HOME_HEALTHY_PROBES + 1)
        # The app is waiting for its next message (the stream is live) while the SDK moves.
        waiting = asyncio.ensure_future(anext(inbox))
        await _eventually(lambda: alice.endpoint == home, probing + 30, "alice's calls to go home")
        await _eventually(lambda: _online_devices(mesh, "a") >= 1, 30, "alice's Sync stream to reopen at home")
        await bob.send("alice", "home again")
        message = await asyncio.wait_for(waiting, 30)
        assert message.text == "home again"
        await alice.ack(message)
        await inbox.aclose()
    finally:
        await alice.close()
        await bob.close()
