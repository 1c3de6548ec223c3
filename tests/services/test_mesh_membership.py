"""Regions added to, drained from and removed from a running mesh (xchat.mesh.membership),
and a region rolled to a new version (xchat.mesh.upgrades), driven through the SDK."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from xchat.client import Client
from xchat.mesh import jsadmin, membership, upgrades
from xchat.mesh.local import LocalMesh
from xchat.mesh.readiness import grpc_serving


async def _receive(client: Client, count: int) -> list[str]:
    inbox = client.messages()
    got: list[str] = []
    try:
        while len(got) < count:
            message = await asyncio.wait_for(anext(inbox), 30)
            got.append(message.text)
            await client.ack(message)
    finally:
        await inbox.aclose()
    return got


async def test_a_region_added_then_another_drained_and_removed_while_users_keep_talking(
    fresh_mesh_factory, tmp_path: Path
) -> None:
    mesh: LocalMesh = fresh_mesh_factory(system_account=True)
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("b")
    ) as bob:
        await alice.register("alice")
        await bob.register("bob")
        await alice.send("bob", "before")
        assert await _receive(bob, 1) == ["before"]

        await asyncio.to_thread(membership.add_region, mesh, "d")
        assert jsadmin.meta_group(mesh)[1] == {"a0", "b0", "c0", "d0"}
        async with await Client.open(tmp_path / "carol.db", mesh.endpoints("d")) as carol:
            await carol.register("carol")
            await carol.send("alice", "from the new region")
            assert await _receive(alice, 1) == ["from the new region"]

            placements = await asyncio.to_thread(membership.drain_region, mesh, "a")
            # Every replica that sat in a moved to d (the one region holding none of that stream).
            assert placements and all("d0" in p.peers and "a0" not in p.peers for p in placements)
            assert all(p.settled_without(["a0"]) for p in placements)
            assert not grpc_serving(mesh.regions["a"].endpoint)

            await asyncio.to_thread(membership.remove_region, mesh, "a")
            assert sorted(mesh.regions) == ["b", "c", "d"]
            # The meta group shrank back to three: one more lost region still leaves a quorum.
            assert jsadmin.meta_group(mesh)[1] == {"b0", "c0", "d0"}

            # Alice's home region is gone: her SDK fails over and she keeps sending and receiving.
            await alice.send("carol", "after")
            await bob.send("alice", "to alice after")
            assert await _receive(carol, 1) == ["after"]
            assert await _receive(alice, 1) == ["to alice after"]


async def test_changes_that_would_break_redundancy_are_refused_before_anything_stops(fresh_mesh_factory) -> None:
    mesh: LocalMesh = fresh_mesh_factory(system_account=True)
    # Three regions, R3: no region could take a's replicas.
    with pytest.raises(membership.MembershipError, match="add a region first"):
        await asyncio.to_thread(membership.drain_region, mesh, "a")
    # Not drained: it still holds replicas.
    with pytest.raises(membership.MembershipError, match="drain it first"):
        await asyncio.to_thread(membership.remove_region, mesh, "b")
    with pytest.raises(membership.MembershipError, match="already exists"):
        await asyncio.to_thread(membership.add_region, mesh, "c")
    assert sorted(mesh.regions) == ["a", "b", "c"]
    assert all(grpc_serving(mesh.regions[r].endpoint) for r in mesh.regions)
    placements = await asyncio.to_thread(lambda: asyncio.run(upgrades._placements(mesh, mesh.nats_urls("a"))))
    assert all(set(p.peers) == {"a0", "b0", "c0"} and p.settled_without() for p in placements)


@pytest.mark.slow  # the upgrade drill (slow) rolls every region too
async def test_a_region_rolled_to_a_new_version_serves_on_it(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(system_account=True)
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("b")
    ) as bob:
        await alice.register("alice")
        await bob.register("bob")
        roll = await asyncio.to_thread(upgrades.roll_region, mesh, "b", "2")
        assert set(roll.nats_restart_s) == {"b0"}
        node = mesh.regions["b"].nodes[0]
        with urllib.request.urlopen(f"http://{node.host}:{node.http_port}/varz", timeout=5) as resp:
            assert "version:2" in json.loads(resp.read())["tags"]
        assert grpc_serving(mesh.regions["b"].endpoint)
        await alice.send("bob", "after the roll")
        assert await _receive(bob, 1) == ["after the roll"]


@pytest.mark.slow  # a fourth mesh start with TLS: kept out of `make test`
async def test_a_region_joins_a_mesh_with_tls_and_nats_users_as_configured(fresh_mesh_factory, tmp_path: Path) -> None:
    """Mutual TLS on routes and clients, one NATS user per role: the new region's server and
    services get the same (routes would be refused, services could not connect otherwise)."""
    mesh: LocalMesh = fresh_mesh_factory(system_account=True, tls=True, nats_auth=True)
    await asyncio.to_thread(membership.add_region, mesh, "d")
    ca = mesh.root_certificates
    assert grpc_serving(mesh.regions["d"].endpoint, root_certificates=ca)
    async with await Client.open(tmp_path / "dan.db", mesh.endpoints("d"), root_certificates=ca) as dan, await Client.open(
        tmp_path / "ann.db", mesh.endpoints("a"), root_certificates=ca
    ) as ann:
        await dan.register("dan")
        await ann.register("ann")
        await asyncio.to_thread(membership.drain_region, mesh, "a")
        await asyncio.to_thread(membership.remove_region, mesh, "a")
        assert jsadmin.meta_group(mesh)[1] == {"b0", "c0", "d0"}
        await ann.send("dan", "over TLS, home region gone")
        assert await _receive(dan, 1) == ["over TLS, home region gone"]
