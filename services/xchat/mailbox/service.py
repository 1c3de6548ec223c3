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
  ``MAX_SYNCS_PER_DEVICE`` calls of its device are open here (``listeners``);
* ended, and new ones refused, with UNAVAILABLE while this process is cut off
  from the store (``Store.cut_off``: no good health check for 15 s, e.g. its
  region partitioned from the others): such a call would wait silently for
  wake-ups that no longer come, and the SDK fails over on UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Collection, Iterator
from typing import Any

import grpc.aio
from nats.js.kv import KeyValue

from xchat.core.devices import DeviceDirectory
from xchat.core.errors import FailedPrecondition, PermissionDenied, Unauthenticated, Unavailable
from xchat.core.settings import DEFAULT_PUSH_COALESCE_S, DEFAULT_TOKEN_KEY_STREAM_END_S
from xchat.core.ids import DeviceId
from xchat.core.liveness import RegionLiveness
from xchat.core.rpc import principal_of, streaming, unary
from xchat.core.store import HEDGE_STREAM, Store, hedge_subject
from xchat.core.tokens import TokenVerifier
from xchat.core.errors import InvalidArgument
from xchat.core.ids import device_id
from xchat.mailbox.acks import RecentRemovals
from xchat.mailbox.hedge import HEDGE_LEADER_READ_S, DeviceStreams, ack_both
from xchat.mailbox.listeners import CUT_OFF_TEXT, Listener, Listeners
from xchat.mailbox.online import OnlineView
from xchat.mailbox.opening import CarriedAcks
from xchat.mailbox.push import Pushes
from xchat.mailbox.webhook import PushSender
from xchat.mailbox.reader import MailboxReader, Stored
from xchat.mailbox.revocations import RevocationWatch
from xchat.mailbox.streams import AckFeeds, follow_acks
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
# After wake-ups that may have been lost (``Listener.lost``), an empty read is retried:
# the replica may not have applied what they announced.
LAGGING_REPLICA_RETRY_S = 0.01
LAGGING_REPLICA_RETRIES = 5
# A wake-up names the sequence relay stored; until the nearest replica has it, the
# call re-reads with backoff (first delay, cap, and give-up bound, seconds). On a
# quiet mesh a replica that answered before applying the write has it 1-2 ms later
# (measured: 11 % of cross-region reads at one message at a time found it lagging,
# and the re-read after 10 ms always found it): 2 ms first, so the lag costs a
# re-read rather than 10 ms of latency. A replica catching up after a healed
# partition can lag by seconds; past the bound the safety poll still delivers.
CATCH_UP_FIRST_S = 0.002
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


def ephemeral_response(listener: Listener) -> mailbox_pb2.SyncResponse:
    """The call's pending ephemeral signals, taken (never stored, never acknowledged)."""
    signals = [mailbox_pb2.Ephemeral(ciphertext=c) for c in listener.ephemeral]
    listener.ephemeral.clear()
    return mailbox_pb2.SyncResponse(ephemeral=signals)


#: Devices one PurgeRevoked call may name (an account's maximum, xchat.auth.accounts).
MAX_PURGE_DEVICES = 16


class MailboxServicer(mailbox_pb2_grpc.MailboxServicer):
    def __init__(
        self,
        store: Store,
        verifier: TokenVerifier,
        directory: DeviceDirectory,
        *,
        store_timeout_s: float,
        push_bucket: KeyValue | None = None,
        push_sender: PushSender | None = None,
        push_coalesce_s: float = DEFAULT_PUSH_COALESCE_S,
        stream_end_spread_s: float = DEFAULT_TOKEN_KEY_STREAM_END_S,
        region: str = "",
    ) -> None:
        self._store = store
        self._stream_end_spread_s = stream_end_spread_s
        self._reader = MailboxReader(store, timeout=store_timeout_s)
        # The hedge stream (ADR 0013): its replies share the reader's one subscription.
        self._hedge_reader = MailboxReader(
            store,
            timeout=store_timeout_s,
            stream=HEDGE_STREAM,
            subject_of=hedge_subject,
            replies=self._reader.replies,
            owned_leader_s=HEDGE_LEADER_READ_S,
        )
        self._verifier = verifier
        self._listeners = Listeners(store)
        # A partition ends the calls here within ~1.5 s, not after the store's 15 s (xchat.core.liveness).
        self._liveness = RegionLiveness(store, region) if region else None
        # Push for offline devices (docs/push.md): a cross-process view of open Syncs, and the wake-ups.
        self._pushes: Pushes | None = None
        if push_bucket is not None:
            view = OnlineView(store, local_devices=self._listeners.devices)
            self._pushes = Pushes(push_bucket, view, push_sender, coalesce_s=push_coalesce_s)
            self._listeners.on_online = view.changed
            self._listeners.on_wakeup_without_call = self._pushes.stored
        self._revocations = RevocationWatch(store, directory, self._listeners)
        self._directory = directory
        self._feeds = AckFeeds()
        # Acknowledged through this process lately: not handed over again by a lagging replica.
        self._removals = RecentRemovals()
        # Open Sync calls -> the id of the key that signed the token each was opened with.
        self._stream_keys: dict[Listener, str] = {}
        self._carried_acks = CarriedAcks()

    async def prepare(self) -> None:
        """Before serving: wake-ups for devices whose calls are still to come are received and remembered."""
        await self._listeners.subscribe()
        if self._pushes is not None:
            await self._pushes.start()
        if self._liveness is not None:
            await self._liveness.start()

    async def stop(self) -> None:
        if self._liveness is not None:
            await self._liveness.stop()
        if self._pushes is not None:
            await self._pushes.stop()

    @unary
    async def RegisterPush(
        self, request: mailbox_pb2.RegisterPushRequest, context: Ctx
    ) -> mailbox_pb2.RegisterPushResponse:
        caller = principal_of(context, self._verifier)
        if self._pushes is None:
            raise FailedPrecondition("this mailbox keeps no push tokens")
        await self._pushes.register(caller.device, request.token)
        return mailbox_pb2.RegisterPushResponse()

    @unary
    async def Ack(self, request: mailbox_pb2.AckRequest, context: Ctx) -> mailbox_pb2.AckResponse:
        caller = principal_of(context, self._verifier)
        record = await self._directory.cached(caller.device)
        if record is None or record.revoked:
            raise PermissionDenied(f"device {caller.device} is revoked or unknown; log in with an active device")
        deleted = await ack_both(self._reader, self._hedge_reader, caller.device, list(request.sequences))
        self._removals.add(caller.device, request.sequences)
        self._feeds.acknowledged(caller.device, list(request.sequences))
        return mailbox_pb2.AckResponse(deleted=deleted)

    @unary
    async def PurgeRevoked(
        self, request: mailbox_pb2.PurgeRevokedMailboxesRequest, context: Ctx
    ) -> mailbox_pb2.PurgeRevokedMailboxesResponse:
        # Anonymous (a deleted account's tokens are dead): only a revoked device's mailbox goes,
        # which it can never read again (Sync and Ack refuse it), so nothing is lost to anyone.
        if len(request.device_ids) > MAX_PURGE_DEVICES:
            raise InvalidArgument(f"device_ids: at most {MAX_PURGE_DEVICES} per call")
        purged = 0
        for raw in request.device_ids:
            device = device_id(raw)
            record, _ = await self._directory.get(device)
            if record is None or not record.revoked:
                continue
            await self._reader.purge_device(device)
            await self._hedge_reader.purge_device(device)
            purged += 1
        return mailbox_pb2.PurgeRevokedMailboxesResponse(purged=purged)

    @streaming
    async def Sync(
        self, request_iterator: AsyncIterator[mailbox_pb2.SyncRequest], context: Ctx
    ) -> AsyncIterator[mailbox_pb2.SyncResponse]:
        caller = principal_of(context, self._verifier)
        device = caller.device
        # Headers now, before any store read: the SDK tells a live but busy process (a
        # thousand devices reconnecting at once: first answers take seconds) from a
        # frozen one by them, and waits longer only for the first answer of a live one.
        await context.send_initial_metadata(())
        # The first request opens the call and names the mailbox.
        opener = await anext(aiter(request_iterator), None)
        if opener is None:
            return
        window, listener = await self._open(device, opener)
        self._stream_keys[listener] = caller.key_id
        acks = asyncio.create_task(self._read_acks(request_iterator, window, listener, self._listeners))
        try:
            async for response in self._deliver(window, listener):
                yield response
        finally:
            self._stream_keys.pop(listener, None)
            self._listeners.remove(listener)
            acks.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acks

    def token_keys_changed(self, accepted: Collection[str]) -> None:
        """Ends the open Sync calls whose access token was signed by a key no longer accepted (the
        drop of a rotation, an emergency rotation after a key leaked): they were authenticated once,
        at their start, and a call opened with a token minted by the thief must not outlive the key.
        Each ends at a random moment within ``stream_end_spread_s``: the SDK then refreshes its
        token and reconnects, and the devices online at the drop do not all come back at once."""
        loop = asyncio.get_running_loop()
        for listener, kid in list(self._stream_keys.items()):
            if kid not in accepted:
                del self._stream_keys[listener]  # scheduled once
                error = Unauthenticated("the key that signed this call's access token was retired: log in again")
                loop.call_later(random.uniform(0, self._stream_end_spread_s), listener.end, error)

    async def _open(self, device: DeviceId, opener: mailbox_pb2.SyncRequest) -> tuple[DeviceStreams, Listener]:
        """What opens Sync and SyncStream alike: the mailbox named, the device active, the acks sent first settled."""
        if opener.device_id and opener.device_id != device:
            raise PermissionDenied(f"device {device} cannot read the mailbox of device {opener.device_id[:64]}")
        if self._store.cut_off:
            raise Unavailable(CUT_OFF_TEXT)
        await self._revocations.admit(device)
        window = DeviceStreams(self._reader, self._hedge_reader, device, removals=self._removals)
        # No leader to delete with: wake-ups may be getting lost too (ADR 0013).
        window.on_deferred = self._store.note_trouble
        await self._carried_acks.settle(window, list(opener.ack_sequences))
        listener = await self._listeners.add(device)
        self._revocations.follow()
        return window, listener

    @streaming
    async def SyncStream(self, request: mailbox_pb2.SyncRequest, context: Ctx) -> AsyncIterator[mailbox_pb2.SyncResponse]:
        """Sync with acknowledgements by unary Ack (gRPC-web): the same checks and delivery loop (``streams``)."""
        caller = principal_of(context, self._verifier)
        device = caller.device
        window, listener = await self._open(device, request)
        self._stream_keys[listener] = caller.key_id
        feed = self._feeds.open(device)
        acks = asyncio.create_task(
            follow_acks(feed, window, listener, self._reader, max_unacked=MAX_UNACKED, hedge=self._hedge_reader)
        )
        try:
            async for response in self._deliver(window, listener):
                yield response
        finally:
            self._stream_keys.pop(listener, None)
            self._feeds.close(device, feed)
            self._listeners.remove(listener)
            acks.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acks

    @staticmethod
    async def _read_acks(
        requests: AsyncIterator[mailbox_pb2.SyncRequest], window: DeviceStreams, listener: Listener, listeners: Listeners
    ) -> None:
        # Purges linger to fold several acks into one (acks.PURGE_LINGER_S): they report here.
        # One that fails is deferred (``DeviceStreams``): the call goes on.
        window.report_purges(
            lambda floor: listeners.removed_through(listener.device, floor),
            lambda floor: listeners.removed_through(listener.device, floor, hedge=True),
        )
        try:
            async for request in requests:
                full = window.outstanding >= MAX_UNACKED
                await window.settle(list(request.ack_sequences))
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
            if listener.ephemeral:
                # Before any read: a wake-up that brought only signals reads nothing (below).
                yield ephemeral_response(listener)
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
            if woken and backlog_sent and not listener.lost and not hedge and listener.announced <= window.cursor:
                # Every wake-up so far named a record this call has read already (it came in
                # while the read that returned the record was under way): nothing to read.
                await listener.wait(random.uniform(SAFETY_POLL_MIN_S, SAFETY_POLL_MAX_S))
                continue
            limit = min(READ_BATCH, MAX_UNACKED - window.outstanding)
            # Both streams merged by accept time; recorded in the windows before sending,
            # so an ack can never arrive for a sequence the window does not know.
            envelopes, consumed, more = await window.read(limit, hedge=hedge, hedge_announced=listener.hedge_live)
            for response in responses(envelopes):
                yield response
            delivered += len(envelopes)
            if consumed:
                lagging_retries = 0
                catch_up_delay = 0.0
                if more:
                    continue  # a full batch: more may follow
                # A short batch ended where the replica's records end: no second read to learn
                # that it is empty (a read per wake-up, not two). The next store wakes us.
                woken = False
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
                if listener.hedge_live > window.hedge.cursor:
                    # The mailbox stream's records were held back for it: read them now, not at the poll.
                    listener.hedge_live = window.hedge.cursor
                    catch_up_delay = 0.0
                    listener.wake.set()
                    continue
            catch_up_delay = 0.0
            if woken and (listener.lost or lagging_retries) and lagging_retries < LAGGING_REPLICA_RETRIES:
                # Woken after possibly lost wake-ups, nothing new: the replica that answered
                # may not have applied the writes yet. (A wake-up naming its sequence is the
                # catch-up above; one naming a record already read needs no retry at all.)
                listener.lost = False
                lagging_retries += 1
                await listener.wait(LAGGING_REPLICA_RETRY_S * lagging_retries)  # a new wake-up ends it early
                listener.polled = False
                listener.wake.set()
                continue
            listener.lost = False
            lagging_retries = 0
            await listener.wait(random.uniform(SAFETY_POLL_MIN_S, SAFETY_POLL_MAX_S))
