"""The outbox: a send that found no region stays queued and is delivered once, in order, later."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from xchat.client import Client, ServiceUnavailable
from xchat.mesh.local import LocalMesh


async def test_send_during_total_outage_is_delivered_once_and_in_order_after(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory()
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a"), call_timeout=1.0) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob:
        await alice.register("alice")
        await bob.register("bob")
        await alice.send("bob", "one")
        mesh.kill_services()
        with pytest.raises(ServiceUnavailable):
            await alice.send("bob", "two")
        mesh.start_services()
        await alice.send("bob", "three")  # "two" goes first, from the outbox
        assert await alice.flush_outbox() == []
        inbox = bob.messages()
        texts = []
        for _ in range(3):
            message = await asyncio.wait_for(anext(inbox), 15)
            texts.append(message.text)
            await bob.ack(message)
        assert texts == ["one", "two", "three"]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(anext(inbox), 3)
        await inbox.aclose()
