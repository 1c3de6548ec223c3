"""Many large messages in flight at once: none may be refused for the size of the batch they were packed in.

Relay accepts SendStream messages up to 1 MiB; 64 concurrent 16 KiB sends used
to be packed into one ~1.1 MB batch, refused whole (RESOURCE_EXHAUSTED), and
dropped from the outbox.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from xchat.client import Client
from xchat.mesh.local import LocalMesh


async def test_sixty_four_sixteen_kib_sends_in_flight(mesh: LocalMesh, tmp_path: Path) -> None:
    alice_name, bob_name = f"alice{secrets.token_hex(4)}", f"bob{secrets.token_hex(4)}"
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, \
            await Client.open(tmp_path / "bob.db", mesh.endpoints("b")) as bob:
        await alice.register(alice_name)
        await bob.register(bob_name)
        await alice.send(bob_name, b"open the session")
        bodies = [bytes([i]) * (16 * 1024) for i in range(64)]
        receipts = await asyncio.gather(*(alice.send(bob_name, body) for body in bodies))
        assert all(len(r) == 1 for r in receipts)
        inbox = bob.messages()
        got: list[bytes] = []
        while len(got) < 65:
            message = await asyncio.wait_for(anext(inbox), 30)
            got.append(message.body)
            await bob.ack(message)
        await inbox.aclose()
        assert got[1:] == bodies  # all delivered, once, in the order of the calls
