"""This device's prekeys in the directory: publishing, counting and topping up.

``Prekeys`` uploads what ``SessionBook.new_prekeys`` generated (the private
halves are stored first), counts what the directory still holds, and, when a
new session used one-time prekeys, replenishes them in the background once
either kind falls below ``PREKEY_LOW_WATER``. The signed keys' rotation is
``_rotation``'s ``PrekeyRotation``, made here with the same upload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from xchat.client import _codec
from xchat.client._rotation import PrekeyRotation
from xchat.client._sessions import SessionBook
from xchat.client._state import LocalState
from xchat.client._tokens import Tokens
from xchat.client.crypto import PublicPrekeys
from xchat.client.errors import RequestRejected, ServiceUnavailable
from xchat.v1 import keys_pb2, keys_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_ONE_TIME_PREKEYS = 50
DEFAULT_PQ_PREKEYS = 20
# Below this many one-time prekeys (of either kind) the SDK publishes more.
PREKEY_LOW_WATER = 10


class Prekeys:
    def __init__(self, state: LocalState, book: SessionBook, tokens: Tokens, *, clock_ms: Callable[[], int]) -> None:
        self._book = book
        self._tokens = tokens
        self.rotation = PrekeyRotation(state, book, upload=self.upload, clock_ms=clock_ms)
        self._top_up: asyncio.Task[None] | None = None

    async def publish(self, *, one_time: int, pq: int, rotate_signed: bool) -> None:
        """Generates and uploads one-time prekeys (and new signed ones when ``rotate_signed``)."""
        now_ms = self.rotation.now_ms()
        await self.upload(self._book.new_prekeys(one_time=one_time, pq=pq, rotate_signed=rotate_signed, now_ms=now_ms))
        if rotate_signed:
            self.rotation.published(now_ms)

    async def upload(self, public: PublicPrekeys) -> None:
        request = _codec.upload_request(public)
        await self._tokens.authed(
            lambda ch, t, md: keys_pb2_grpc.KeysStub(ch).UploadPrekeys(request, timeout=t, metadata=md), service="keys"
        )

    async def left(self) -> tuple[int, int]:
        """(classical, post-quantum) one-time prekeys the directory still holds for this device."""
        reply: keys_pb2.CountPrekeysResponse = await self._tokens.authed(
            lambda ch, t, md: keys_pb2_grpc.KeysStub(ch).CountPrekeys(keys_pb2.CountPrekeysRequest(), timeout=t, metadata=md),
            service="keys",
        )
        return reply.one_time_prekeys, reply.pq_one_time_prekeys

    def schedule_top_up(self) -> None:
        """A new session used one-time prekeys: replenish them in the background when low."""
        if self._top_up is None or self._top_up.done():
            self._top_up = asyncio.create_task(self._top_up_prekeys())

    async def _top_up_prekeys(self) -> None:
        try:
            classical, post_quantum = await self.left()
            one_time = DEFAULT_ONE_TIME_PREKEYS - classical if classical < PREKEY_LOW_WATER else 0
            pq = DEFAULT_PQ_PREKEYS - post_quantum if post_quantum < PREKEY_LOW_WATER else 0
            if one_time or pq:
                await self.publish(one_time=one_time, pq=pq, rotate_signed=False)
        except (RequestRejected, ServiceUnavailable) as exc:
            log.info("prekey top-up postponed: %s", exc)  # the next new session tries again

    async def close(self) -> None:
        """Stops a top-up in progress (the rotation is closed on its own, ``rotation.close``)."""
        if self._top_up is not None:
            self._top_up.cancel()
            await asyncio.gather(self._top_up, return_exceptions=True)
