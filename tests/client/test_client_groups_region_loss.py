"""A group conversation through the loss of a whole region (issue 14, "done means"; docs/adr/0015).

Alice (homed in a), bob (homed in b) and carol (homed in c) share a group on a
private three-region mesh. While alice sends a numbered run of group messages,
region b (nats-server and services, bob's home) is killed. Every message
alice's ``send_group`` acknowledged, and every one she sent at all, arrives
exactly once and in order on bob's and carol's devices: bob's client fails
over, the mailboxes keep a quorum in a and c.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from xchat.client import Client, Message, SendReceipt
from xchat.mesh.local import LocalMesh

MESSAGES = 12
KILL_AFTER = 4
WAIT_S = 90.0  # a stream leader lost with region b: a new Raft election takes 4-9 s, on a loaded machine more


async def _read(client: Client, into: list[Message]) -> None:
    async for message in client.messages():
        into.append(message)
        await client.ack(message)


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_group_messages_sent_while_a_region_dies_arrive_exactly_once(
    fresh_mesh_factory: Callable[..., LocalMesh], tmp_path: Path
) -> None:
    mesh = fresh_mesh_factory()
    clients = {name: await Client.open(tmp_path / f"{name}.db", mesh.endpoints(region))
               for name, region in (("alice", "a"), ("bob", "b"), ("carol", "c"))}
    received: dict[str, list[Message]] = {name: [] for name in clients}
    for name, client in clients.items():
        await client.register(f"{name}{secrets.token_hex(4)}")
    readers = [asyncio.create_task(_read(c, received[n])) for n, c in clients.items()]
    alice, bob, carol = clients["alice"], clients["bob"], clients["carol"]
    try:
        group_id = await alice.create_group("through the storm", [bob.account, carol.account])
        await alice.send_group(group_id, "before")  # sender keys out before the fault
        for name in ("bob", "carol"):
            await until(lambda: [m.text for m in received[name]] == ["before"], f"{name} reading the first message")

        acked: list[str] = []
        for i in range(MESSAGES):
            if i == KILL_AFTER:
                mesh.kill_region("b")
            text = f"m{i:02d}"
            outcomes = await alice.send_group(group_id, text)
            if all(isinstance(o, SendReceipt) for o in outcomes):
                acked.append(text)
        # Whatever was not acknowledged in the call's retry budget stays in the outbox: flush it.
        for _ in range(5):
            if not [o for o in await alice.flush_outbox() if not isinstance(o, SendReceipt)]:
                break
        expected = ["before", *(f"m{i:02d}" for i in range(MESSAGES))]
        for name in ("bob", "carol"):
            await until(lambda: len(received[name]) >= len(expected), f"{name} reading every group message")
            texts = [m.text for m in received[name]]
            assert texts == expected, texts  # exactly once, in alice's order
            assert all(m.group_id == group_id and m.sender_account == alice.account for m in received[name])
        assert len(acked) >= MESSAGES - KILL_AFTER - 2, acked  # a failover, not an outage
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for client in clients.values():
            await client.close()
