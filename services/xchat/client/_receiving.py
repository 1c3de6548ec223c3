"""The receive path: the Sync loop, batched decryption, and acknowledgements that are never lost.

``messages()`` holds one Sync stream (backlog, then live), reconnecting and
failing over on its own. Each response (up to 128 envelopes) is decrypted in
order and committed in one SQLite transaction (ratchets, consumed
prekeys, plaintexts), flushed to disk by the group fsync (``_walsync``)
before the app sees any of it; the only await inside a
batch is the directory check of a new session's sender, and the batch's
transaction is committed before it, so no other task ever finds one open.

Acknowledgements: ``ack()`` records the id as seen and the mailbox sequence
as pending in one (non-fsynced) transaction, then sends it on the live Sync
stream (which frees the server's delivery window and deletes at once).
Envelopes already seen or unreadable are acknowledged the same way without
reaching the app. Sync acks carry no answer, so a pending sequence is dropped
only once the server is known to have deleted it:

- for free, at the ``backlog_done`` of the next Sync call: the backlog holds
  every envelope of this device not deleted when the call started, so a
  pending sequence it did not redeliver is gone (one it did redeliver is
  seen, and acknowledged again on the new call);
- on ``close()``, by a unary ``Ack`` (answered after the deletes) for the
  acks of the current call, at most ``CLOSE_CONFIRM_MAX`` of them, bounded
  in time, so a closing app leaves nothing it acknowledged in the stream.

Nothing the app acknowledged is lost to a broken stream or a stopped process;
confirming on the way (a unary ``Ack`` per batch) would cost the servers a
lookup per sequence (measured: +35 % server CPU per message).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from xchat.client._reordering import Arrival, Reorder
from xchat.client._sessions import SessionBook
from xchat.client._state import InboxItem, LocalState
from xchat.client._sync_responses import SyncSilent, message_from, next_response, opened_within
from xchat.client._tokens import Tokens
from xchat.client._transport import RETRYABLE, Transport, metadata, rejected
from xchat.client.crypto.ratchet import Gaps
from xchat.client.errors import RequestRejected, ServiceUnavailable
from xchat.client.messages import Message
from xchat.v1 import mailbox_pb2, mailbox_pb2_grpc

log = logging.getLogger(__name__)

MAX_ACKS_PER_FRAME = 1000
RECONNECT_BACKOFF_S = (0.1, 0.3, 1.0, 2.0)
# A Sync stream torn down by a restarting server can end with CANCELLED, or INTERNAL
# ("Internal error from Core") / UNKNOWN from grpc-core; reconnecting is always safe
# (unacked envelopes come back), so the receive loop never ends on these.
STREAM_RECONNECT = {grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# Acks confirmed by ``close()`` (the latest ones; older ones of a long call were
# applied long ago or come back in the next backlog): one unary Ack's worth.
CLOSE_CONFIRM_MAX = 1000
# Messages remembered as held by the app (unacknowledged), oldest forgotten first:
# a forgotten one's copy is handed over again, never lost.
IN_APP_MAX = 10_000
# Sync calls that did not start in time are remembered this long, at most this many
# (the wait for the next one's headers doubles per one: 1, 2, 4, 8 s; see ``_live_within``).
SILENT_MEMORY_S = 60.0
SILENT_BACKOFF_STEPS = 3
# A started Sync call (headers received: the process is live) may take this long to answer
# first. 1,000 devices reconnecting at once on this 2-core machine took over 4 s per first
# answer; with a 1 s bound every one of them failed over, came back with the home probes and
# missed it again, and the herd kept the servers at a full core with no message sent.
FIRST_ANSWER_WITHIN_S = 10.0


@dataclass(frozen=True, slots=True)
class _Committed:
    """A response's envelopes, decrypted and committed (not flushed yet)."""

    arrivals: list[Arrival]
    # Sequences to acknowledge without reaching the app (seen before, unreadable, control payloads).
    skipped: list[int]


def _backoff(failures: int) -> float:
    return RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)]


class Receiver:
    def __init__(
        self,
        state: LocalState,
        book: SessionBook,
        transport: Transport,
        tokens: Tokens,
        *,
        backlog_done: asyncio.Event,
        directory_key: Callable[[str, str], Awaitable[bytes | None]],
        on_new_session: Callable[[], None],
        reorder: Reorder | None = None,
    ) -> None:
        self._state = state
        self._book = book
        self._transport = transport
        self._tokens = tokens
        self._backlog_done = backlog_done
        self._directory_key = directory_key
        self._on_new_session = on_new_session
        # Per-session order to the app (``_reordering``, issue 10): committed messages whose
        # predecessors are missing wait there, bounded in time and count.
        self._reorder = reorder if reorder is not None else Reorder()
        # Sequences to send on the live Sync stream (all of them are also pending in state).
        self._outgoing: list[int] = []
        # The latest acks made since the current Sync call started (confirmed on close).
        self._this_call: deque[int] = deque(maxlen=CLOSE_CONFIRM_MAX)
        self._ack_wake = asyncio.Event()
        self._closed = False
        # Message id -> sequences of further copies, for messages this ``messages()``
        # iteration handed to the app and the app has not acknowledged yet: a copy
        # that arrives meanwhile (a reconnect redelivers it; relay's hedged write
        # may store it twice, ADR 0013) is not handed over again, and is
        # acknowledged with the original.
        self._in_app: dict[bytes, list[int]] = {}
        # When Sync calls lately were silent (no headers or no first answer in time; ``_live_within``).
        self._silent_at: deque[float] = deque(maxlen=SILENT_BACKOFF_STEPS)
        # Typing and presence signals of a response (``_signals``): never acked, never stored.
        self.on_ephemeral: Callable[[list[bytes]], None] | None = None

    # -- acknowledgements ----------------------------------------------

    async def ack(self, message: Message) -> None:
        sequences = [message.sequence, *self._in_app.pop(message.message_id, [])]
        # Not fsynced: on power loss the app may see this message again, never lose it.
        with self._state.transaction(durable=False):
            self._state.mark_seen(message.message_id)
            self._state.add_pending_acks(sequences)
        self._queue_acks(sequences)

    def _queue_acks(self, sequences: list[int]) -> None:
        self._outgoing.extend(sequences)
        self._this_call.extend(sequences)
        self._ack_wake.set()

    async def _frames(self) -> AsyncIterator[mailbox_pb2.SyncRequest]:
        # Acks queued for a broken call but perhaps never sent stay in _outgoing;
        # ones it sent that the server never applied come back in this call's backlog.
        yield mailbox_pb2.SyncRequest()
        while True:
            while not self._outgoing:
                self._ack_wake.clear()
                await self._ack_wake.wait()
            frame, self._outgoing = self._outgoing[:MAX_ACKS_PER_FRAME], self._outgoing[MAX_ACKS_PER_FRAME:]
            yield mailbox_pb2.SyncRequest(ack_sequences=frame)

    def _confirm_by_backlog(self, pending: set[int], redelivered: set[int]) -> None:
        """At ``backlog_done``: pending acks from before the call that were not redelivered are deleted."""
        confirmed = pending - redelivered
        if confirmed:
            with self._state.transaction(durable=False):
                self._state.remove_pending_acks(sorted(confirmed))

    async def _confirm_on_close(self, budget: float) -> None:
        """One unary ``Ack`` (answered after the deletes) for the latest acks of this call."""
        sequences = sorted(set(self._this_call))
        if not sequences:
            return
        request = mailbox_pb2.AckRequest(sequences=sequences)
        try:
            async with asyncio.timeout(budget):  # not wait_for: it can drop a cancellation on 3.11
                await self._tokens.authed(
                    lambda ch, t, md: mailbox_pb2_grpc.MailboxStub(ch).Ack(request, timeout=t, metadata=md),
                    service="mailbox",
                )
        except (ServiceUnavailable, RequestRejected, asyncio.TimeoutError) as exc:
            log.info("closing with acknowledgements unconfirmed (the next Sync confirms them): %s", exc)
            return
        with self._state.transaction(durable=False):
            self._state.remove_pending_acks(sequences)

    # -- the Sync loop ----------------------------------------------------

    def _live_within(self) -> float:
        """How long a new Sync call may take to start (headers): ``failover_after``, doubled per silent call lately.

        One second finds a frozen region fast (issue 10). Each call that was
        silent in the last ``SILENT_MEMORY_S`` doubles the wait (1, 2, 4, 8 s):
        a herd of devices moving together to a busy region gets the time it
        needs after a first miss instead of moving on together, again and again.
        """
        now = time.monotonic()
        recent = sum(1 for at in self._silent_at if now - at < SILENT_MEMORY_S)
        return float(self._transport.failover_after * 2**recent)

    async def messages(self) -> AsyncGenerator[Message, None]:
        failures = 0
        self._in_app = {}  # a new iteration hands unacknowledged messages over again
        # Committed batches, oldest first, each with the flush that must end before the app sees it.
        # While one flushes, the loop reads and decrypts the next responses (their commits share the
        # next flush); batches are handed over strictly in order.
        flushing: deque[tuple[asyncio.Task[None], _Committed]] = deque()
        try:
            while not self._closed:
                # Batches a broken call committed are handed over before the next call (their copies
                # redelivered there are recognised as in the app's hands, never handed twice).
                while flushing:
                    task, committed = flushing.popleft()
                    await task
                    for message in self._released(committed):
                        yield message
                target = self._transport.endpoint
                try:
                    token = await self._tokens.token()
                except ServiceUnavailable:
                    # Login or refresh found no endpoint (regions failing over): keep trying.
                    await asyncio.sleep(_backoff(failures))
                    failures += 1
                    continue
                stub = mailbox_pb2_grpc.MailboxStub(self._transport.channel("mailbox"))
                # Pending before the call starts: confirmed or redelivered by its backlog.
                pending: set[int] | None = set(self._state.pending_acks())
                redelivered: set[int] = set()
                self._this_call.clear()
                call = stub.Sync(self._frames(), metadata=metadata(token))
                # The transport moved (back home, or away after a send found this region dead):
                # this stream ends and reopens there.
                moved = asyncio.Event()

                def follow(previous: str, call: Any = call, target: str = target, moved: asyncio.Event = moved) -> None:
                    if previous == target:
                        moved.set()
                        call.cancel()

                stop_following = self._transport.on_move(follow)
                responses = opened_within(call, self._live_within(), FIRST_ANSWER_WITHIN_S)
                reading: asyncio.Task[mailbox_pb2.SyncResponse | None] | None = None
                try:
                    while True:
                        if reading is None and not self._reorder and not flushing:
                            response = await next_response(responses)  # nothing held or flushing: no task, no timer (idle)
                        else:
                            # Held messages: wake at the earliest hold deadline even without traffic.
                            # A batch flushing: wake when it is on disk, and hand it over.
                            if reading is None:
                                reading = asyncio.create_task(next_response(responses), name="xchat.client.sync-read")
                            waits = {reading, flushing[0][0]} if flushing else {reading}
                            done, _ = await asyncio.wait(
                                waits, timeout=self._reorder.next_deadline_s(), return_when=asyncio.FIRST_COMPLETED
                            )
                            while flushing and flushing[0][0].done():
                                task, committed = flushing.popleft()
                                task.result()  # a failed flush: nothing of it reaches the app
                                for message in self._released(committed):
                                    yield message
                            if reading not in done:
                                if not done:
                                    for message in self._reorder.due():
                                        yield message
                                continue
                            response, reading = reading.result(), None
                        if response is None:
                            break
                        failures = 0
                        if pending is not None:
                            redelivered.update(e.sequence for e in response.envelopes)
                        if response.ephemeral and self.on_ephemeral is not None:
                            self.on_ephemeral([signal.ciphertext for signal in response.ephemeral])
                        if response.envelopes:
                            committed = await self._commit_batch(response.envelopes)
                            flushing.append((asyncio.create_task(self._state.sync(), name="xchat.client.recv-sync"), committed))
                        if response.HasField("backlog_done"):
                            # The backlog is handed over (on disk, in order) before it is called done.
                            while flushing:
                                task, committed = flushing.popleft()
                                await task
                                for message in self._released(committed):
                                    yield message
                            if pending is not None:
                                self._confirm_by_backlog(pending, redelivered)
                                pending = None
                            self._backlog_done.set()
                    if self._closed:
                        return
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.CANCELLED and self._closed:
                        return
                    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                        self._tokens.invalidate()
                    elif exc.code() in RETRYABLE or exc.code() in STREAM_RECONNECT:
                        self._transport.fail_over(target, f"Sync {exc.code().name}: {exc.details()}")
                    else:
                        raise rejected(exc) from exc
                    await asyncio.sleep(_backoff(failures))
                    failures += 1
                except asyncio.CancelledError:
                    # grpc.aio raises this for a call cancelled here: only the move home is ours to absorb.
                    current = asyncio.current_task()
                    if not moved.is_set() or self._closed or (current is not None and current.cancelling()):
                        raise
                    log.info("Sync follows the transport to %s", self._transport.endpoint)
                except SyncSilent as exc:
                    # A server that accepted the call but never answered is as good as down.
                    self._silent_at.append(time.monotonic())
                    self._transport.fail_over(target, str(exc))
                    await asyncio.sleep(_backoff(failures))
                    failures += 1
                except ServiceUnavailable:
                    # A directory lookup while opening an envelope found no endpoint; the
                    # envelope is not acked, so it comes back after the reconnect.
                    self._transport.fail_over(target, "directory lookup found no endpoint")
                    await asyncio.sleep(_backoff(failures))
                    failures += 1
                finally:
                    stop_following()
                    call.cancel()
                    if reading is not None:
                        reading.cancel()
                        await asyncio.gather(reading, return_exceptions=True)
        finally:
            for task, _ in flushing:
                task.cancel()  # only this wait: the shared flush itself is shielded

    async def _commit_batch(self, envelopes: Sequence[mailbox_pb2.Envelope]) -> _Committed:
        """Decrypts a response's envelopes in order, in one commit without fsync.

        Nothing of it is acted on until ``_released``, after the group fsync
        (``_walsync``) that covers the commit: the caller waits for
        ``state.sync()`` in between, shared with whatever else committed meanwhile.
        """
        arrivals: list[Arrival] = []
        skipped: list[int] = []
        self._state.begin(durable=False)
        self._book.batch_begin()
        try:
            for envelope in envelopes:
                mid = bytes(envelope.message_id)
                copies = self._in_app.get(mid)
                if copies is not None:
                    copies.append(envelope.sequence)  # the app (or the order buffer) holds it: acknowledged with it
                    continue
                if self._reorder.holds(mid):
                    continue  # a redelivered copy of a held message: handed over once, when released
                opened = await self._open(envelope)
                if opened is None:
                    skipped.append(envelope.sequence)
                    continue
                device, item, gaps = opened
                if item is None:
                    skipped.append(envelope.sequence)  # a control payload: its place in order still counts
                    if gaps is not None:
                        arrivals.append((device, None, gaps))
                else:
                    arrivals.append((device, message_from(envelope, item), gaps))
                    # Remembered from here, held for order or not: a redelivered copy is acknowledged with it.
                    if len(self._in_app) >= IN_APP_MAX:
                        self._in_app.pop(next(iter(self._in_app)))
                    self._in_app[mid] = []
            # Already seen or unreadable: acknowledged without reaching the app.
            self._state.add_pending_acks(skipped)
            self._book.batch_flush()
            self._state.commit()
        except BaseException:
            if self._state.in_transaction:
                self._state.rollback()
            self._book.batch_end()  # staged sessions were rolled back with their plaintexts
            self._book.forget()  # in-memory prekey consumption of what was rolled back
            raise
        finally:
            self._book.batch_end()
        return _Committed(arrivals, skipped)

    def _released(self, committed: _Committed) -> list[Message]:
        """A committed batch, now on disk: acknowledged, answered, and handed over in each session's order."""
        if committed.skipped:
            self._queue_acks(committed.skipped)
        if self._book.heal.due:
            self._book.on_heal()  # retry requests to send or answer (``_healing``)
        return self._reorder.arrived(committed.arrivals)

    async def _open(self, envelope: mailbox_pb2.Envelope) -> tuple[str | None, InboxItem | None, Gaps | None] | None:
        """The plaintext of ``envelope``, staged in the open transaction; None when it must only be acked.

        Returns (sender device, plaintext or None for a control payload, its gaps); the
        device is None for a copy decrypted before and not acknowledged yet (handed as is).
        """
        mid = bytes(envelope.message_id)
        if self._state.was_seen(mid):
            return None
        item = self._state.inbox_item(mid)
        if item is not None:
            return None, item, None  # decrypted before, not acknowledged yet
        opened = self._book.open(mid, envelope.ciphertext)
        if opened is None:
            if (refused := self._book.last_refused) is not None:
                self._reorder.refused(*refused)  # decrypted, then refused: no predecessor to wait for
            return None
        if opened.new_session:
            # The sealed sender claim is only a claim until the initiator's
            # identity key matches the one the account's signed list gives that
            # device, or a certificate signed by the pinned account key vouches
            # for a device linked since that list (no directory lookup then).
            # Nothing stays open across the lookup: other tasks use this database.
            if opened.vouched:
                published: bytes | None = opened.their_identity_key
            else:
                self._book.batch_flush()
                self._state.commit()
                self._book.batch_end()  # the send path may advance sessions while we wait
                try:
                    published = await self._directory_key(opened.content.sender_account, opened.content.sender_device)
                finally:
                    self._state.begin(durable=False)
                    self._book.batch_begin()
            if published != opened.their_identity_key:
                self._book.reject(opened, "sender identity does not match the directory")
                return None
            if not self._book.certificate_holds(opened):  # first contact: the account key is pinned only now
                return None
            self._on_new_session()
        return opened.content.sender_device, self._book.stage(opened), opened.gaps

    async def close(self, *, confirm_within: float) -> None:
        """Stops receiving; confirms this call's latest acks, waiting at most ``confirm_within`` seconds."""
        self._closed = True
        await self._confirm_on_close(confirm_within)
