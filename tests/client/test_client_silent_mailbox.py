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
from xchat.client._receiving import FIRST_ANSWER_WITHIN_S
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


async def _received_through_region_b(mesh: LocalMesh, tmp_path: Path, silent: SilentMailbox, within: float) -> None:
    """Bob's home mailbox is ``silent``: a message to him arrives through region b within ``within`` seconds."""
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
            receive = asyncio.create_task(asyncio.wait_for(anext(inbox), within))
            await alice.send(bob_name, "through a working region")
            message = await receive
            assert message.text == "through a working region"
            assert silent.opened >= 1, "the silent mailbox was never tried: the test proves nothing"
            assert bob.endpoint == mesh.regions["b"].endpoint
            await bob.ack(message)
            await inbox.aclose()
    finally:
        await server.stop(0)


async def test_a_sync_that_never_answers_fails_over(mesh: LocalMesh, tmp_path: Path) -> None:
    await _received_through_region_b(mesh, tmp_path, SilentMailbox(), 12)


class HeadersOnlyMailbox(SilentMailbox):
    """Starts the call (sends its headers, as a live mailbox does before its first read), then says nothing."""

    async def Sync(self, request_iterator: AsyncIterator[mailbox_pb2.SyncRequest], context: Any) -> AsyncIterator[mailbox_pb2.SyncResponse]:
        self.opened += 1
        await context.send_initial_metadata(())
        async for _ in request_iterator:
            pass
        await asyncio.Event().wait()
        yield mailbox_pb2.SyncResponse()  # pragma: no cover - never reached


async def test_a_sync_that_starts_but_never_answers_fails_over_within_the_first_answer_bound(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    """Headers prove the process live, so the SDK waits longer for the first answer (a busy region
    is not a dead one), but not for ever: a mailbox stuck after its headers is left too."""
    await _received_through_region_b(mesh, tmp_path, HeadersOnlyMailbox(), FIRST_ANSWER_WITHIN_S + 8)


def test_each_recent_silent_call_doubles_the_wait_for_the_next_ones_headers(monkeypatch: Any) -> None:
    """A herd moving to a busy region together must not keep missing a fixed 1 s and moving on together."""
    from xchat.client import _receiving

    class Transport:
        failover_after = 1.0

    now = [1000.0]
    monkeypatch.setattr(_receiving.time, "monotonic", lambda: now[0])
    receiver = _receiving.Receiver.__new__(_receiving.Receiver)
    receiver._transport = Transport()  # type: ignore[assignment]  # noqa: SLF001
    receiver._silent_at = _receiving.deque(maxlen=_receiving.SILENT_BACKOFF_STEPS)  # noqa: SLF001
    waits = []
    for _ in range(5):
        waits.append(receiver._live_within())  # noqa: SLF001
        receiver._silent_at.append(now[0])  # noqa: SLF001
        now[0] += 1.0
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
    now[0] += _receiving.SILENT_MEMORY_S
    assert receiver._live_within() == 1.0  # noqa: SLF001  # a quiet minute: a new freeze is found within a second again
