"""A Sync call's responses as the receive loop reads them, and an envelope as the app sees it.

``opened_within``: every Sync sends its headers and then answers at once, so
headers or a first answer that do not come in time are a frozen or stuck
server (``SyncSilent``); ``next_response``: the next
response or None at the end of the call; ``message_from``: the ``Message`` of a
committed envelope.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc.aio

from xchat.client._state import InboxItem
from xchat.client.crypto import Payload
from xchat.client.messages import Message
from xchat.v1 import mailbox_pb2


class SyncSilent(Exception):
    """A Sync call gave no first answer in time (a stuck or frozen server)."""


async def opened_within(
    call: grpc.aio.StreamStreamCall[mailbox_pb2.SyncRequest, mailbox_pb2.SyncResponse], live_within: float, answer_within: float
) -> AsyncIterator[mailbox_pb2.SyncResponse]:
    """The call's responses; its headers must come within ``live_within`` seconds, its first answer within ``answer_within``.

    Every Sync answers at once (its first read: envelopes, or ``backlog_done``),
    and sends its headers before that first read, so: no headers in time is a
    frozen or unreachable process (move on within a second); headers but no
    answer in time is a server stuck in its first read (e.g. a store it cannot
    reach), given longer because a live process may only be busy (a thousand
    devices reconnecting at once took seconds per first answer). Keepalive pings
    cannot tell: the server's HTTP/2 layer still answers them. A server that
    sends no early headers sends them with its first answer: ``live_within``
    then bounds the first answer, as before.
    """
    responses = call.__aiter__()
    try:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for drops the caller's
        # cancellation when the answer lands in the same loop step (the loop then ran on).
        async with asyncio.timeout(live_within):
            await call.initial_metadata()
    except asyncio.TimeoutError:
        raise SyncSilent(f"Sync call not started within {live_within:.1f}s") from None
    try:
        async with asyncio.timeout(answer_within):
            first = await responses.__anext__()
    except StopAsyncIteration:
        return
    except asyncio.TimeoutError:
        raise SyncSilent(f"Sync gave no first answer within {answer_within:.1f}s") from None
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
