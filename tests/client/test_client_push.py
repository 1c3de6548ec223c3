"""Push for offline devices on a real three-region mesh, against a local webhook receiver (issue 14).

A device registers a push token (``Client.register_push``); while it has no
open Sync in any region, stored envelopes make one mailbox process POST a
content-free wake-up to the gateway, at most once per coalescing window.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from xchat.client import Client, RequestRejected
from xchat.mailbox.online import BEAT_S
from xchat.mesh.local import LocalMesh
from xchat.mesh.ports import free_port

WAIT_S = 30.0
QUIET_S = 3.0


class Gateway:
    """A local HTTP receiver that records each POST body and answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        self.bodies.append(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    def for_token(self, token: str) -> list[dict[str, Any]]:
        return [b for b in map(json.loads, self.bodies) if b.get("token") == token]

    async def until(self, token: str, count: int, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while len(self.for_token(token)) < count:
            assert time.monotonic() < deadline, f"no push for {token} within {timeout}s: {self.bodies}"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def gateway() -> Any:
    receiver = Gateway()
    await receiver.start()
    yield receiver
    await receiver.stop()


async def _client(mesh: LocalMesh, path: Path, region: str) -> Client:
    client = await Client.open(path, mesh.endpoints(region))
    await client.register(f"u{secrets.token_hex(4)}")
    return client


async def test_offline_devices_get_one_content_free_push_per_burst_and_online_ones_none(
    fresh_mesh_factory: Any, gateway: Gateway, tmp_path: Path
) -> None:
    mesh = fresh_mesh_factory(extra_env={"XCHAT_PUSH_WEBHOOK_URL": f"http://127.0.0.1:{gateway.port}/wake"})
    started = time.monotonic()  # the services are up
    alice = await _client(mesh, tmp_path / "alice.db", "a")
    bob = await _client(mesh, tmp_path / "bob.db", "b")  # offline: never opens a Sync
    carol = await _client(mesh, tmp_path / "carol.db", "c")  # online in region c
    reading: list[str] = []

    async def read() -> None:
        async for message in carol.messages():
            await carol.ack(message)
            reading.append(message.text)

    reader = asyncio.create_task(read())
    try:
        bob_token, carol_token = f"bob-{secrets.token_hex(8)}", f"carol-{secrets.token_hex(8)}"
        await bob.register_push(bob_token)
        await carol.register_push(carol_token)
        with pytest.raises(RequestRejected) as refused:
            await bob.register_push("has spaces")
        assert refused.value.code == "INVALID_ARGUMENT"
        await carol.backlog_done.wait()
        # Mailbox processes push only once a full beat of the others' online views had time to arrive.
        await asyncio.sleep(max(0.0, 1.6 * BEAT_S - (time.monotonic() - started)))

        texts = [f"secret text {i}" for i in range(20)]
        for text in texts:  # one envelope, one wake-up at a time: 20 chances to push
            await alice.send(bob.account, text)
        await alice.send_many([(carol.account, t) for t in texts])
        await gateway.until(bob_token, 1)
        deadline = time.monotonic() + WAIT_S
        while len(reading) < len(texts):
            assert time.monotonic() < deadline, reading
            await asyncio.sleep(0.05)
        await asyncio.sleep(QUIET_S)

        # Exactly one wake-up for the burst, none for the device reading in another region.
        assert gateway.for_token(bob_token) == [{"token": bob_token, "wake": True}]
        assert gateway.for_token(carol_token) == []
        raw = b"".join(gateway.bodies)
        for secret in (alice.account, bob.account, alice.device_id, bob.device_id, b"secret text"):
            assert (secret if isinstance(secret, bytes) else secret.encode()) not in raw

        # Removing the token stops pushes.
        await bob.register_push(b"")
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        for client in (alice, bob, carol):
            await client.close()
