"""gRPC servicer for relay: unary and pipelined streaming sends, identified or sealed.

Send and SendStream: the caller is authorised (active device) by
``xchat.core.edge``; sends are rate-limited here, per envelope, because the
cost is in the content. SendSealed (unidentified delivery,
``xchat.relay.sealed``) has no caller: the edge limits its calls per client
address, and each envelope is limited here per recipient and authorised by
the recipient's delivery key, or by the recipient's opt-in to sealed sends
from anyone (then limited per recipient by the separate stranger budget,
``xchat.relay.sealed``). Results carry an opaque receipt, never the
mailbox stream sequence (which stays inside relay, for wake-ups).

SendStream holds at most ``STREAM_WINDOW`` envelopes per call between reading
a request and the client reading its result: a permit is returned only when a
result has been handed to gRPC, so a client that sends but never reads stops
being read (gRPC flow control then pushes back on it) instead of growing the
server's memory by a result per envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any


import grpc.aio
import nats.errors

from xchat.core.authz import current_client_address, require_principal
from xchat.core.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, XChatError, grpc_status
from xchat.core.ids import DeviceId, device_id, message_id
from xchat.core.ratelimit import RateLimiter
from xchat.core.rpc import store_timeout, streaming, unary
from xchat.core.store import translate
from xchat.core.tokens import Principal
from xchat.relay.ephemeral import EphemeralRelay
from xchat.relay.sealed import Access
from xchat.relay.sending import Receipt, Relay
from xchat.v1 import relay_pb2, relay_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]
# Envelopes read but whose results the client has not yet been handed, per
# SendStream; beyond it the stream stops reading requests, and gRPC flow
# control pushes back on the client.
STREAM_WINDOW = 1024
MAX_BATCH = 256
# Results waiting to be written: a batch holds at least one envelope, so the
# window bounds this queue too; the explicit bound documents it.
RESULTS_QUEUE = STREAM_WINDOW


# Per-recipient keys of sealed sends in the relay's limiter (device ids are hex: no clash).
SEALED_KEY_PREFIX = "sealed-to:"
STRANGER_KEY_PREFIX = "stranger-to:"
STRANGER_FROM_PREFIX = "stranger-from:"


def _result(receipt: Receipt, recipient: str) -> relay_pb2.SendResult:
    return relay_pb2.SendResult(
        recipient_device_id=recipient,
        message_id=receipt.message_id,
        receipt=receipt.receipt,
        duplicate=receipt.duplicate,
        stored_at_ms=receipt.stored_at_ms,
    )


class RelayServicer(relay_pb2_grpc.RelayServicer):
    def __init__(
        self,
        relay: Relay,
        *,
        store_timeout_s: float,
        limiter: RateLimiter,
        strangers: RateLimiter | None = None,
        stranger_senders: RateLimiter | None = None,
        ephemeral: EphemeralRelay | None = None,
    ) -> None:
        self._relay = relay
        self._ephemeral = ephemeral
        self._timeout = store_timeout_s
        self._limiter = limiter
        # Sealed envelopes without a valid key to a device accepting them from anyone:
        # per recipient, and per sender address.
        self._strangers = strangers or limiter
        self._stranger_senders = stranger_senders or self._strangers

    @unary
    async def Send(self, request: relay_pb2.SendRequest, context: Ctx) -> relay_pb2.SendResult:
        sender = require_principal()
        self._limiter.take(sender.device)
        receipt = await self._relay.send(
            sender,
            device_id(request.recipient_device_id, field="recipient_device_id"),
            message_id(request.message_id),
            request.ciphertext,
            timeout=store_timeout(context, self._timeout),
            ttl_s=request.ttl_seconds,
        )
        return _result(receipt, request.recipient_device_id)

    @unary
    async def SendEphemeral(self, request: relay_pb2.EphemeralBatch, context: Ctx) -> relay_pb2.EphemeralAccepted:
        """Typing and presence signals, never stored (``xchat.relay.ephemeral``)."""
        if self._ephemeral is None:
            raise FailedPrecondition("this relay does not forward ephemeral signals")
        items = [(item.recipient_device_id, item.ciphertext) for item in request.items]
        return relay_pb2.EphemeralAccepted(published=await self._ephemeral.forward(require_principal(), items))

    @streaming
    async def SendStream(
        self, request_iterator: AsyncIterator[relay_pb2.SendBatch], context: Ctx
    ) -> AsyncIterator[relay_pb2.SendBatchResult]:
        async with contextlib.aclosing(self._stream(request_iterator, require_principal())) as results:
            async for result in results:
                yield result

    @streaming
    async def SendSealed(
        self, request_iterator: AsyncIterator[relay_pb2.SendBatch], context: Ctx
    ) -> AsyncIterator[relay_pb2.SendBatchResult]:
        async with contextlib.aclosing(self._stream(request_iterator, None)) as results:
            async for result in results:
                yield result

    async def _stream(
        self, request_iterator: AsyncIterator[relay_pb2.SendBatch], sender: Principal | None
    ) -> AsyncGenerator[relay_pb2.SendBatchResult, None]:
        """One send stream; ``sender`` None: sealed (each envelope names its recipient's delivery key)."""
        results: asyncio.Queue[relay_pb2.SendBatchResult | None] = asyncio.Queue(RESULTS_QUEUE + 1)
        # Counts envelopes, not batches: bounded work per call whatever the batch size.
        window = asyncio.Semaphore(STREAM_WINDOW)
        in_flight: set[asyncio.Task[None]] = set()

        async def send_one(request: relay_pb2.SendRequest) -> tuple[relay_pb2.SendResult, int, bool]:
            """The envelope's result, (0 on failure) its stream sequence and whether it was hedged, for the wake-up."""
            try:
                recipient = device_id(request.recipient_device_id, field="recipient_device_id")
                if sender is None:
                    # Contacts (the key) and strangers (the recipient's opt-in) pay separate budgets:
                    # a stranger's flood never spends what the recipient's contacts may send.
                    if await self._relay.sealed_access(recipient, request.delivery_key) is Access.ANYONE:
                        # Per sender address too: one address cannot spread a flood over many
                        # opted-in devices (it pays first: a refusal then spends nothing of the recipient's).
                        self._stranger_senders.take(STRANGER_FROM_PREFIX + current_client_address())
                        self._strangers.take(STRANGER_KEY_PREFIX + recipient)
                    else:
                        self._limiter.take(SEALED_KEY_PREFIX + recipient)
                receipt = await self._relay.send_pipelined(
                    sender,
                    recipient,
                    message_id(request.message_id),
                    request.ciphertext,
                    timeout=self._timeout,
                    delivery_key=request.delivery_key if sender is None else None,
                    ttl_s=request.ttl_seconds,
                )
                return _result(receipt, request.recipient_device_id), receipt.sequence, receipt.hedged
            except (XChatError, nats.errors.Error, asyncio.TimeoutError) as exc:
                code, text = grpc_status(translate(exc))
                failed = relay_pb2.SendResult(
                    message_id=request.message_id,
                    recipient_device_id=request.recipient_device_id[:64],
                    error_code=code.value[0],
                    error_message=text,
                )
                return failed, 0, False

        async def send_batch(batch: relay_pb2.SendBatch) -> None:
            outcomes = await asyncio.gather(*(send_one(r) for r in batch.envelopes))
            # One wake-up per recipient per batch, after its envelopes are durable,
            # naming the highest sequence stored for it (the mailbox waits for its replica).
            stored: dict[DeviceId, int] = {}
            hedged: dict[DeviceId, int] = {}
            for o, sequence, in_hedge in outcomes:
                if o.error_code == 0:
                    device = DeviceId(o.recipient_device_id)
                    into = hedged if in_hedge else stored
                    into[device] = max(into.get(device, 0), sequence)
            await self._relay.notify(stored, hedged)
            await results.put(relay_pb2.SendBatchResult(results=[o for o, _, _ in outcomes]))

        async def read_batches() -> None:
            try:
                async for batch in request_iterator:
                    if not 0 < len(batch.envelopes) <= MAX_BATCH:
                        raise InvalidArgument(f"a batch holds 1..{MAX_BATCH} envelopes, got {len(batch.envelopes)}")
                    for _ in batch.envelopes:
                        await window.acquire()
                    if sender is not None:  # sealed sends: per recipient, in send_one
                        try:
                            self._limiter.take(sender.device, len(batch.envelopes))
                        except ResourceExhausted as exc:
                            # Answered per envelope, the stream goes on: ending the call while the
                            # client writes makes grpc.aio report INTERNAL instead (edge.py), and
                            # the app would lose the retry hint.
                            await results.put(_refused(batch, exc))
                            continue
                    task = asyncio.create_task(send_batch(batch))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                # The client half-closed: finish what was accepted, then end.
                while in_flight:
                    await asyncio.gather(*list(in_flight), return_exceptions=True)
            finally:
                await results.put(None)

        reader = asyncio.create_task(read_batches())
        try:
            while (result := await results.get()) is not None:
                yield result
                # Handed to gRPC (which buffers within its flow-control window):
                # only now may the reader take more envelopes in.
                for _ in result.results:
                    window.release()
            await reader
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await _settle(in_flight)


def _refused(batch: relay_pb2.SendBatch, exc: XChatError) -> relay_pb2.SendBatchResult:
    """Every envelope of ``batch`` refused for ``exc`` (nothing of it was stored)."""
    code, text = grpc_status(exc)
    return relay_pb2.SendBatchResult(results=[
        relay_pb2.SendResult(message_id=r.message_id, recipient_device_id=r.recipient_device_id[:64],
                             error_code=code.value[0], error_message=text)
        for r in batch.envelopes
    ])


async def _settle(tasks: set[asyncio.Task[None]]) -> None:
    """Lets accepted sends finish even if the client went away: they may already be stored."""
    if tasks:
        await asyncio.gather(*list(tasks), return_exceptions=True)


