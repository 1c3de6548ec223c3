"""Fixtures for SDK tests that watch a conversation: a registered client whose messages
and events are read in the background (issue 14: receipts, timers, edits)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from xchat.client import Client, Message
from xchat.mesh.local import LocalMesh

WAIT_S = 20.0


class Peer:
    """One registered device; ``messages()`` and ``events()`` are read in background tasks."""

    def __init__(self, client: Client, *, ack: bool) -> None:
        self.client = client
        self.messages: list[Message] = []
        self.events: list[Any] = []
        self._ack = ack
        self._changed = asyncio.Event()
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._watch())]

    @property
    def account(self) -> str:
        return self.client.account

    async def _read(self) -> None:
        async for message in self.client.messages():
            if self._ack:
                await self.client.ack(message)
            self.messages.append(message)
            self._changed.set()

    async def _watch(self) -> None:
        async for event in self.client.events():
            self.events.append(event)
            self._changed.set()

    async def until(self, found: Callable[[], Any], timeout: float = WAIT_S) -> Any:
        """Waits (bounded) until ``found()`` returns something truthy; returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := found()):
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"timed out; messages={[m.text for m in self.messages]} events={self.events}")
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                pass
        return result

    async def message(self, text: str) -> Message:
        found: Message = await self.until(lambda: next((m for m in self.messages if m.text == text), None))
        return found

    async def event(self, kind: type, where: Callable[[Any], bool] = lambda e: True) -> Any:
        return await self.until(lambda: next((e for e in self.events if isinstance(e, kind) and where(e)), None))

    def events_of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()


@pytest.fixture
async def peers(mesh: LocalMesh, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Peer]]]:
    """``await peers(region, ack=True)``: a new account with one device homed in ``region``."""
    opened: list[Peer] = []

    async def make(region: str, *, ack: bool = True, prefix: str = "p") -> Peer:
        client = await Client.open(tmp_path / f"{prefix}{len(opened)}.db", mesh.endpoints(region))
        try:
            await client.register(f"{prefix}{secrets.token_hex(4)}")
        except BaseException:
            await client.close()
            raise
        peer = Peer(client, ack=ack)
        opened.append(peer)
        return peer

    yield make
    for peer in opened:
        await peer.close()
