"""A pipelined send (SendStream, ``Client.send_many``) to a full mailbox is the recipient's quota:
RESOURCE_EXHAUSTED, as on the unary path, never UNAVAILABLE (which would send the SDK to
another region and count as an outage)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from xchat.client import Client, Failed, SendReceipt
from xchat.mesh.local import LocalMesh

QUOTA = 5


async def test_a_pipelined_send_to_a_full_mailbox_is_resource_exhausted(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory(mailbox_quota=QUOTA)
    async with await Client.open(tmp_path / "a.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "b.db", mesh.endpoints("b")
    ) as bob, await Client.open(tmp_path / "c.db", mesh.endpoints("c")) as carol:
        await alice.register("alice")
        await bob.register("bob")
        await carol.register("carol")
        started = time.monotonic()
        results = await alice.send_many([("bob", f"m{i}") for i in range(QUOTA + 3)] + [("carol", "unaffected")])
        elapsed = time.monotonic() - started
        assert all(isinstance(r, SendReceipt) for r in results[:QUOTA]), results
        refused = results[QUOTA : QUOTA + 3]
        # Before: UNAVAILABLE "no endpoint acknowledged it in time", after the SDK's whole retry budget.
        assert all(isinstance(r, Failed) and r.code == "RESOURCE_EXHAUSTED" and "full" in r.message for r in refused), refused
        assert elapsed < 10, f"answered at once, not after retrying every region: {elapsed:.1f} s"
        assert isinstance(results[-1], SendReceipt), "another recipient in the same stream is unaffected"
        carol_inbox = carol.messages()
        assert (await asyncio.wait_for(anext(carol_inbox), 15)).text == "unaffected"
        await carol_inbox.aclose()
        # Nothing the mailbox holds was lost, and reading makes room again.
        inbox = bob.messages()
        for i in range(QUOTA):
            message = await asyncio.wait_for(anext(inbox), 15)
            assert message.text == f"m{i}"
            await bob.ack(message)
        deadline = time.monotonic() + 15
        while not isinstance((again := (await alice.send_many([("bob", "room again")]))[0]), SendReceipt):
            assert again.code == "RESOURCE_EXHAUSTED" and time.monotonic() < deadline, again  # acks still applying
            await asyncio.sleep(0.2)
        assert (await asyncio.wait_for(anext(inbox), 15)).text == "room again"
        await inbox.aclose()
