"""What JetStream stores of a conversation: ciphertext only, no plaintext, no sender."""

from __future__ import annotations

import asyncio
from pathlib import Path

from xchat.client import Client
from xchat.mesh.local import LocalMesh


def _stored_bytes(mesh: LocalMesh, stream: str | None = None) -> bytes:
    """Every byte of every file under each node's JetStream store (optionally one stream's)."""
    blobs = []
    for node in mesh.all_nodes:
        for path in node.store_dir.rglob("*"):
            if path.is_file() and (stream is None or f"/streams/{stream}/" in str(path)):
                blobs.append(path.read_bytes())
    return b"".join(blobs)


async def test_stored_conversation_holds_no_plaintext_and_no_sender(fresh_mesh_factory, tmp_path: Path) -> None:
    mesh: LocalMesh = fresh_mesh_factory()
    async with await Client.open(tmp_path / "alice.db", mesh.endpoints("a")) as alice, await Client.open(
        tmp_path / "bob.db", mesh.endpoints("b")
    ) as bob:
        await alice.register("alice-plain")
        await bob.register("bob-plain")
        secrets_said = [f"the launch code is {i:04d}-PLAINTEXT-MARKER".encode() for i in range(5)]
        for body in secrets_said:
            await alice.send("bob-plain", body)
        await asyncio.sleep(1.0)  # let every replica apply the writes

        mailbox = _stored_bytes(mesh, "XCHAT_MAILBOX")
        everything = _stored_bytes(mesh)
        # Positive control: we are reading the stream's real bytes (subjects are stored in clear).
        assert f"xchat.mbx.{bob.device_id}".encode() in mailbox
        assert len(mailbox) > 5 * 100
        for body in secrets_said:
            assert body not in everything
        assert b"PLAINTEXT-MARKER" not in everything
        assert b"alice-plain" not in mailbox, "sender account in clear"
        assert alice.device_id.encode() not in mailbox, "sender device id in clear"
        assert bytes.fromhex(alice.device_id) not in mailbox
        assert alice._book.identity.public not in mailbox, "sender identity key in clear"

        # And bob still reads them all: the bytes are ciphertext, not garbage.
        inbox = bob.messages()
        got = [await asyncio.wait_for(anext(inbox), 10) for _ in secrets_said]
        assert [m.body for m in got] == secrets_said
        assert {m.sender_account for m in got} == {"alice-plain"}
        await inbox.aclose()
