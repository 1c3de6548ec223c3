"""A mailbox that accepts Sync and then says nothing (stuck, or hostile) must not hold an app's messages.

Keepalive pings cannot tell such a server from an idle one (its HTTP/2 layer
answers them), so the SDK requires a Sync's first answer within its call
timeout and otherwise fails over like for any unreachable region.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc.aio

from xchat.client import Client
from xchat.mesh.local import LocalMesh
from xchat.v1 import mailbox_pb2, mailbox_pb2_grpc


class SilentMailbox(mailbox_pb2_grpc.MailboxServicer):
    def __init__(self) -> None:
        self.opened = 0

    async def Sync(self, request_iterator: AsyncIterator[mailbox_pb2.SyncRequest], context: Any) -> AsyncIterator[mailbox_pb2.SyncResponse]:
        self.opened += 1
        async for _ in request_iterator:  # reads acks, answers nothing, for ever
            pass
        await asyncio.Event().wait()
        yield mailbox_pb2.SyncResponse()  # pragma: no cover - never reached


async def test_a_sync_that_never_answers_fails_over(mesh: LocalMesh, tmp_path: Path) -> None:
    silent = SilentMailbox()
    server = grpc.aio.server()
    mailbox_pb2_grpc.add_MailboxServicer_to_server(silent, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        home = dict.fromkeys(("auth", "keys", "relay"), mesh.regions["a"].endpoint)
        home["mailbox"] = f"127.0.0.1:{port}"
        alice_name, bob_name = f"alice{secrets.token_hex(4)}", f"bob{secrets.token_hex(4)}"
        async with await Client.open(tmp_path / "bob.db", [home, mesh.regions["b"].endpoint], call_timeout=2.0) as bob, \
                await Client.open(tmp_path / "alice.db", mesh.endpoints("c")) as alice:
            await bob.register(bob_name)
            await alice.register(alice_name)
            inbox = bob.messages()
            receive = asyncio.create_task(asyncio.wait_for(anext(inbox), 12))
            await alice.send(bob_name, "through a working region")
            message = await receive
            assert message.text == "through a working region"
            assert silent.opened >= 1, "the silent mailbox was never tried: the test proves nothing"
            assert bob.endpoint == mesh.regions["b"].endpoint
            await bob.ack(message)
            await inbox.aclose()
    finally:
        await server.stop(0)
