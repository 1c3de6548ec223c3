"""gRPC servicer for mailbox: Sync (backlog, then live, acks upstream) and Ack.

Delivery loop of one Sync call: read what follows the cursor; when nothing
does, wait for a wake-up from relay (``xchat.ntf.<device>``) or the poll
interval, whichever comes first. The poll makes a lost wake-up or a stalled
subscription cost at most ``POLL_INTERVAL_S`` of latency, never a message.
At most ``MAX_UNACKED`` envelopes are outstanding per call (backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
import nats.errors

from xchat.core.errors import InvalidArgument, PermissionDenied
from xchat.core.ids import DeviceId
from xchat.core.rpc import principal_of, streaming, unary
from xchat.core.store import Store, mailbox_subject, notify_subject
from xchat.core.tokens import TokenVerifier
from xchat.mailbox.reader import MailboxReader
from xchat.v1 import mailbox_pb2, mailbox_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]
MAX_UNACKED = 1000
MAX_ACKS_PER_REQUEST = 1000
READ_BATCH = 128
POLL_INTERVAL_S = 2.0
# A wake-up can arrive before the local replica has applied the write.
LAGGING_REPLICA_RETRY_S = 0.01
LAGGING_REPLICA_RETRIES = 5


class MailboxServicer(mailbox_pb2_grpc.MailboxServicer):
    def __init__(self, store: Store, verifier: TokenVerifier, *, store_timeout_s: float) -> None:
        self._store = store
        self._reader = MailboxReader(store, timeout=store_timeout_s)
        self._verifier = verifier
        self._timeout = store_timeout_s

    async def _ack(self, device: DeviceId, sequences: list[int], delivered: set[int]) -> int:
        if len(sequences) > MAX_ACKS_PER_REQUEST:
            raise InvalidArgument(f"at most {MAX_ACKS_PER_REQUEST} sequences per acknowledgement")
        # Only the device's own envelopes may be deleted: ones this call
        # delivered are known; others are checked against the stream.
        mine = [s for s in sequences if s in delivered]
        for seq in sequences:
            if seq in delivered or seq <= 0:
                continue
            subject = await self._reader.owner_subject(seq)
            if subject is None:
                continue  # already deleted: acknowledgements are idempotent
            if subject != mailbox_subject(device):
                raise PermissionDenied(f"sequence {seq} is not in your mailbox; only your own envelopes can be acknowledged")
            mine.append(seq)
        deleted = await self._reader.delete(mine)
        delivered.difference_update(sequences)
        return deleted

    @unary
    async def Ack(self, request: mailbox_pb2.AckRequest, context: Ctx) -> mailbox_pb2.AckResponse:
        caller = principal_of(context, self._verifier)
        deleted = await self._ack(caller.device, list(request.sequences), set())
        return mailbox_pb2.AckResponse(deleted=deleted)

    @streaming
    async def Sync(
        self, request_iterator: AsyncIterator[mailbox_pb2.SyncRequest], context: Ctx
    ) -> AsyncIterator[mailbox_pb2.SyncResponse]:
        caller = principal_of(context, self._verifier)
        device = caller.device
        wake = asyncio.Event()
        unacked: set[int] = set()
        room = asyncio.Event()
        room.set()
        failure: list[BaseException] = []

        async def on_notify(_msg: Any) -> None:
            wake.set()

        # The first request opens the call and names the mailbox.
        opener = await anext(aiter(request_iterator), None)
        if opener is None:
            return
        if opener.device_id and opener.device_id != device:
            raise PermissionDenied(f"device {device} cannot read the mailbox of device {opener.device_id[:64]}")
        await self._ack(device, list(opener.ack_sequences), unacked)

        async def read_acks() -> None:
            try:
                async for request in request_iterator:
                    await self._ack(device, list(request.ack_sequences), unacked)
                    if len(unacked) < MAX_UNACKED:
                        room.set()
            except Exception as exc:  # noqa: BLE001 - surfaced by the delivery loop
                failure.append(exc)
                wake.set()
                room.set()

        subscription = await self._store.nc.subscribe(notify_subject(device), cb=on_notify)
        acks = asyncio.create_task(read_acks())
        try:
            cursor = 0
            delivered = 0
            backlog_sent = False
            lagging_retries = 0
            while True:
                if failure:
                    raise failure[0]
                if len(unacked) >= MAX_UNACKED:
                    room.clear()
                    await room.wait()
                    continue
                woken = wake.is_set()
                wake.clear()
                batch = await self._reader.read_after(device, cursor, min(READ_BATCH, MAX_UNACKED - len(unacked)))
                if batch:
                    cursor = batch[-1].sequence
                    unacked.update(stored.sequence for stored in batch)
                    delivered += len(batch)
                    yield mailbox_pb2.SyncResponse(envelopes=[stored.envelope.to_pb(stored.sequence) for stored in batch])
                if batch:
                    lagging_retries = 0
                    continue
                if not backlog_sent:
                    backlog_sent = True
                    yield mailbox_pb2.SyncResponse(backlog_done=mailbox_pb2.BacklogDone(delivered=delivered))
                if woken and lagging_retries < LAGGING_REPLICA_RETRIES:
                    # Woken but nothing new: the replica that answered may not
                    # have applied the write yet.
                    lagging_retries += 1
                    await asyncio.sleep(LAGGING_REPLICA_RETRY_S * lagging_retries)
                    wake.set()
                    continue
                lagging_retries = 0
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), POLL_INTERVAL_S)
        finally:
            acks.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acks
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
