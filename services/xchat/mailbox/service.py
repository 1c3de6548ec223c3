"""gRPC servicer for mailbox: Sync (backlog, then live, acks upstream) and Ack.

Delivery loop of one Sync call: read what follows the cursor; when nothing
does, wait for a wake-up from relay (``xchat.ntf.<device>``, dispatched by the
process's one subscription in ``listeners``, taken by ``prepare`` before the
server serves) or the safety poll, whichever comes first. Wake-ups drive
reads; the poll is drawn from [``SAFETY_POLL_MIN_S``, ``SAFETY_POLL_MAX_S``]
(jitter spreads idle calls), so a lost wake-up delays a message by at most
``SAFETY_POLL_MAX_S``, never loses it (ADR 0008). A call starts knowing the
wake-ups of the last seconds (``listeners``): a backlog read answered by a
replica that has not yet applied a just-acknowledged send is read again until
it has (the catch-up below), not left to the poll.

Bounds of one call:
* at most ``MAX_UNACKED`` envelopes outstanding (backpressure);
* each response at most ``MAX_RESPONSE_BYTES`` serialized (always at least one
  envelope). The SDK's receive limit is 4 MiB (``grpc.max_receive_message_length``
  in ``xchat.client._transport``, and gRPC's own default); one maximal envelope
  (128 KiB of ciphertext plus framing) fits with room, and no backlog can make
  a response exceed it;
* ended with PERMISSION_DENIED within 5 s of its device's revocation
  (``revocations``), and with RESOURCE_EXHAUSTED when more than
  ``MAX_SYNCS_PER_DEVICE`` calls of its device are open here (``listeners``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc.aio

from xchat.core.devices import DeviceDirectory
from xchat.core.errors import PermissionDenied
from xchat.core.rpc import principal_of, streaming, unary
from xchat.core.store import HEDGE_STREAM, Store, hedge_subject
from xchat.core.tokens import TokenVerifier
from xchat.mailbox.listeners import Listener, Listeners
from xchat.mailbox.reader import MailboxReader, Stored
from xchat.mailbox.revocations import RevocationWatch
from xchat.mailbox.streams import DeviceStreams, ack_both
from xchat.v1 import mailbox_pb2, mailbox_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]
MAX_UNACKED = 1000
READ_BATCH = 128
# A quarter of the SDK's 4 MiB receive limit: big envelopes still batch
# (7 of 128 KiB), and a server-side framing change cannot push it over.
MAX_RESPONSE_BYTES = 1024 * 1024
# Wake-ups are core NATS (fire-and-forget): the poll bounds a lost one's delay.
SAFETY_POLL_MIN_S = 20.0
SAFETY_POLL_MAX_S = 30.0
# A wake-up can arrive before the local replica has applied the write.
LAGGING_REPLICA_RETRY_S = 0.01
LAGGING_REPLICA_RETRIES = 5
# A wake-up names the sequence relay stored; until the nearest replica has it, the
# call re-reads with backoff (first delay, cap, and give-up bound, seconds). A
# replica catching up after a healed partition can lag by seconds; past the bound
# the safety poll still delivers.
CATCH_UP_FIRST_S = 0.01
CATCH_UP_MAX_S = 0.25
CATCH_UP_BOUND_S = 10.0
# After a sign of trouble in this process's view of the store (``Store.trouble_at``),
# every read also reads the hedge stream for this long: wake-ups for hedged
# envelopes may have been lost meanwhile (a partition), and the mailbox stream's
# newer records must not overtake them (ADR 0013).
TROUBLE_HEDGE_READS_S = 30.0


def responses(batch: list[Stored], limit: int = MAX_RESPONSE_BYTES) -> Iterator[mailbox_pb2.SyncResponse]:
    """``batch`` as responses of at most ``limit`` bytes each (one envelope alone may not be split)."""
    chunk: list[mailbox_pb2.Envelope] = []
    size = 0
    for stored in batch:
        envelope = stored.envelope.to_pb(stored.sequence)
        # Field tag + length prefix: at most 6 bytes on top of the envelope.
        cost = envelope.ByteSize() + 6
        if chunk and size + cost > limit:
            yield mailbox_pb2.SyncResponse(envelopes=chunk)
            chunk, size = [], 0
        chunk.append(envelope)
        size += cost
    if chunk:
        yield mailbox_pb2.SyncResponse(envelopes=chunk)


class MailboxServicer(mailbox_pb2_grpc.MailboxServicer):
    def __init__(self, store: Store, verifier: TokenVerifier, directory: DeviceDirectory, *, store_timeout_s: float) -> None:
        self._store = store
        self._reader = MailboxReader(store, timeout=store_timeout_s)
        # The hedge stream (ADR 0013): its replies share the reader's one subscription.
        self._hedge_reader = MailboxReader(
            store, timeout=store_timeout_s, stream=HEDGE_STREAM, subject_of=hedge_subject, replies=self._reader.replies
        )
        self._verifier = verifier
        self._listeners = Listeners(store)
        self._revocations = RevocationWatch(store, directory, self._listeners)
        self._directory = directory

    async def prepare(self) -> None:
        """Before serving: wake-ups for devices whose calls are still to come are received and remembered."""
        await self._listeners.subscribe()

    @unary
    async def Ack(self, request: mailbox_pb2.AckRequest, context: Ctx) -> mailbox_pb2.AckResponse:
        caller = principal_of(context, self._verifier)
        record = await self._directory.cached(caller.device)
        if record is None or record.revoked:
            raise PermissionDenied(f"device {caller.device} is revoked or unknown; log in with an active device")
        deleted = await ack_both(self._reader, self._hedge_reader, caller.device, list(request.sequences))
        return mailbox_pb2.AckResponse(deleted=deleted)

    @streaming
    async def Sync(
        self, request_iterator: AsyncIterator[mailbox_pb2.SyncRequest], context: Ctx
    ) -> AsyncIterator[mailbox_pb2.SyncResponse]:
        caller = principal_of(context, self._verifier)
        device = caller.device
        # The first request opens the call and names the mailbox.
        opener = await anext(aiter(request_iterator), None)
        if opener is None:
            return
        if opener.device_id and opener.device_id != device:
            raise PermissionDenied(f"device {device} cannot read the mailbox of device {opener.device_id[:64]}")
        await self._revocations.admit(device)
        window = DeviceStreams(self._reader, self._hedge_reader, device)
        await window.settle(list(opener.ack_sequences))
        listener = await self._listeners.add(device)
        acks = asyncio.create_task(self._read_acks(request_iterator, window, listener, self._listeners, self._store))
        try:
            async for response in self._deliver(window, listener):
                yield response
        finally:
            self._listeners.remove(listener)
            acks.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acks

    @staticmethod
    async def _read_acks(
        requests: AsyncIterator[mailbox_pb2.SyncRequest],
        window: DeviceStreams,
        listener: Listener,
        listeners: Listeners,
        store: Store,
    ) -> None:
        try:
            async for request in requests:
                full = window.outstanding >= MAX_UNACKED
                deferred = window.deferred_acks
                await window.settle(list(request.ack_sequences))
                if window.deferred_acks > deferred:
                    store.note_trouble()  # no leader to delete with: wake-ups may be getting lost too
                listeners.removed_through(listener.device, window.primary.purged)
                listeners.removed_through(listener.device, window.hedge.purged, hedge=True)
                if full and window.outstanding < MAX_UNACKED:
                    listener.wake.set()  # room again: resume delivery
        except Exception as exc:  # noqa: BLE001 - surfaced by the delivery loop
            listener.end(exc)

    async def _deliver(self, window: DeviceStreams, listener: Listener) -> AsyncIterator[mailbox_pb2.SyncResponse]:
        delivered = 0
        backlog_sent = False
        lagging_retries = 0
        catch_up_delay = 0.0
        catch_up_until = 0.0
        while True:
            if listener.ended is not None:
                raise listener.ended
            if window.outstanding >= MAX_UNACKED:
                listener.wake.clear()
                await listener.wake.wait()
                listener.wake.set()  # whatever woke us, read once more
                continue
            woken = listener.wake.is_set() and not listener.polled
            # A poll, relay announced a hedge record this call has not read, or this process
            # may have missed wake-ups (its region was cut off, frozen, reconnecting): read the
            # hedge stream too, from its leader (a replica here may still be catching up).
            hedge = (
                listener.polled
                or listener.hedge_announced > window.hedge.cursor
                or self._store.troubled_within(TROUBLE_HEDGE_READS_S)
            )
            listener.wake.clear()
            listener.polled = False
            envelopes, consumed = await window.read(min(READ_BATCH, MAX_UNACKED - window.outstanding), hedge=hedge)
            for response in responses(envelopes):
                yield response
            delivered += len(envelopes)
            if consumed:
                lagging_retries = 0
                catch_up_delay = 0.0
                continue
            if not backlog_sent:
                backlog_sent = True
                yield mailbox_pb2.SyncResponse(backlog_done=mailbox_pb2.BacklogDone(delivered=delivered))
            if listener.announced > window.primary.cursor or listener.hedge_announced > window.hedge.cursor:
                # Relay stored a later envelope than this replica has shown us: it lags.
                now = asyncio.get_running_loop().time()
                if catch_up_delay == 0.0:
                    catch_up_until = now + CATCH_UP_BOUND_S
                if now < catch_up_until:
                    catch_up_delay = min(CATCH_UP_MAX_S, max(CATCH_UP_FIRST_S, catch_up_delay * 2))
                    await listener.wait(catch_up_delay)
                    listener.polled = False
                    listener.wake.set()
                    continue
                # Gone meanwhile (acknowledged elsewhere, expired) or a stuck replica: the poll covers it.
                listener.announced = window.primary.cursor
                listener.hedge_announced = window.hedge.cursor
            catch_up_delay = 0.0
            if woken and lagging_retries < LAGGING_REPLICA_RETRIES:
                # Woken but nothing new: the replica that answered may not
                # have applied the write yet.
                lagging_retries += 1
                await asyncio.sleep(LAGGING_REPLICA_RETRY_S * lagging_retries)
                listener.wake.set()
                continue
            lagging_retries = 0
            await listener.wait(random.uniform(SAFETY_POLL_MIN_S, SAFETY_POLL_MAX_S))
