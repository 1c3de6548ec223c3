"""A Sync call's responses as the receive loop reads them, and an envelope as the app sees it.

``opened_within``: every Sync answers at once, so a first answer that does not
come in time is a stuck server (``SyncSilent``); ``next_response``: the next
response or None at the end of the call; ``message_from``: the ``Message`` of a
committed envelope.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from xchat.client._state import InboxItem
from xchat.client.crypto import Payload
from xchat.client.messages import Message
from xchat.v1 import mailbox_pb2


class SyncSilent(Exception):
    """A Sync call gave no first answer in time (a stuck or frozen server)."""


async def opened_within(call: AsyncIterator[mailbox_pb2.SyncResponse], timeout: float) -> AsyncIterator[mailbox_pb2.SyncResponse]:
    """The call's responses; the first must come within ``timeout`` seconds.

    Every Sync answers at once (its first read: envelopes, or ``backlog_done``),
    so silence after opening means the server is stuck before or in its first
    read (e.g. a store it cannot reach): move on instead of waiting for ever.
    Keepalive pings cannot tell: the server's HTTP/2 layer still answers them.
    """
    responses = call.__aiter__()
    try:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for drops the caller's
        # cancellation when the answer lands in the same loop step (the loop then ran on).
        async with asyncio.timeout(timeout):
            first = await responses.__anext__()
    except StopAsyncIteration:
        return
    except asyncio.TimeoutError:
        raise SyncSilent(f"Sync gave no first answer within {timeout:.1f}s") from None
    yield first
    async for response in responses:
        yield response


async def next_response(responses: AsyncIterator[mailbox_pb2.SyncResponse]) -> mailbox_pb2.SyncResponse | None:
    """The next response; None at the end of the call."""
    try:
        return await responses.__anext__()
    except StopAsyncIteration:
        return None


def message_from(envelope: mailbox_pb2.Envelope, item: InboxItem) -> Message:
    payload = Payload.decode(item.payload)
    return Message(
        message_id=bytes(envelope.message_id),
        sender_account=item.sender_account,
        sender_device=item.sender_device,
        counter=payload.counter,
        sent_at_ms=payload.sent_at_ms,
        content_type=payload.content_type,
        body=payload.body,
        sequence=envelope.sequence,
    )
