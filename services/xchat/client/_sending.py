"""The send path: group-committed encryption, the outbox queue, and one coalescing flusher.

``send()`` and ``send_many()`` hand their payloads to ``Sender``, which
encrypts every request submitted in the same event-loop turn in one SQLite
transaction (group commit) and, once the group fsync off the loop
(``_walsync``) made it durable, appends the ciphertexts to an in-memory queue
that mirrors the outbox table, in outbox order. One flusher task drains the front of that queue: one unary ``Send``
for a lone envelope, otherwise a ``SendStream`` that lives while work flows
(envelopes queued meanwhile join it). Each caller waits on futures for its
own envelopes only, so 64 concurrent sends cost a round trip or a few, not
64 × 64 deliveries.

Order: an envelope is queued behind every older one (the outbox's rowid
order); a stream always starts at the front of the queue, and an envelope
answered with a retryable failure stays where it was and halts the stream,
so a newer envelope to the same device is never sent before an older one
(unary, streaming, replay after a failure, concurrent callers alike). Relay
stores one device's envelopes in the order a stream carried them.

Exactly-once: the ciphertext and the advanced ratchet are durable before the
envelope leaves; a retry or a restarted client resends the same bytes with
the same message id, which the relay de-duplicates (and the recipient's seen
set past the relay's window). A row leaves the outbox after the relay's ack
or a permanent refusal, never before.

Unidentified delivery (issue 17, ``_delivery``): an envelope to a device
whose delivery key we know goes on ``SendSealed`` with that key and no
access token, so relay never learns who sends; others go on the
authenticated calls. A stream carries envelopes of one kind only: at the
first envelope of the other kind it stops taking new ones and ends once what
is in flight settled, and the next drain starts with the other kind (order
kept as above). A sealed envelope refused as UNAUTHENTICATED (the recipient
rotated its profile key, or never registered a verifier) stays in place, its
key is forgotten, and it is resent on the authenticated path.

Failover: when the call itself fails with UNAVAILABLE or DEADLINE_EXCEEDED,
a stream with envelopes in flight stays silent for ``failover_after`` (1 s,
ADR 0013), or two streams in a row stored nothing and were answered
UNAVAILABLE per envelope (a region cut off from the others answers at once
but cannot store). A per-envelope UNAVAILABLE on a stream that also stores
is retried on the same endpoint. See docs/adr/0007-sdk-send-path.md.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import grpc
import grpc.aio

from xchat.client._batches import LOST_STATUS_RETRIES, SEND_BATCH, SEND_BATCH_BYTES, chunks, code_name, request, status_lost
from xchat.client._sessions import EncryptRequest, SessionBook
from xchat.client._state import LocalState, OutboxItem
from xchat.client._tokens import Tokens
from xchat.client._transport import RETRYABLE, Transport, anonymous_metadata, metadata
from xchat.client.errors import ClientError, RequestRejected, ServiceUnavailable
from xchat.client.messages import Failed, SendReceipt
from xchat.v1 import relay_pb2, relay_pb2_grpc

log = logging.getLogger(__name__)

Key = tuple[bytes, str]
Outcome = SendReceipt | Failed
# An envelope queued by a commit, and the future its caller waits on for its outcome.
Pending = tuple[OutboxItem, "asyncio.Future[Outcome]"]
# Envelopes in flight on one stream: relay's STREAM_WINDOW, so it never stalls on flow control.
ROUND_MAX = 1024
# A burst may be cut into this many batches (of at least MIN_BATCH): results
# return per batch, so callers resume in waves and their next sends overlap
# those in flight. Measured (ADR 0007): 4 waves halve p50 latency at 64 in
# flight but double server CPU per message (a wake-up and a mailbox read per
# batch) and lower throughput on this 2-core machine; so one wave.
WAVES = 1
MIN_BATCH = 8
RECONNECT_BACKOFF_S = (0.05, 0.1, 0.3, 1.0, 2.0)
# Streams in a row that stored nothing, answered UNAVAILABLE per envelope, before failing over.
UNSTORED_STREAMS_FAILOVER = 2
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]
class Sender:
    def __init__(
        self,
        state: LocalState,
        book: SessionBook,
        transport: Transport,
        tokens: Tokens,
        *,
        sender: Callable[[], tuple[str, str]],
        fetch_sessions: Callable[[str], Awaitable[list[str]]],
        ready_devices: Callable[[str], list[str] | None] | None = None,
        device_gone: Callable[[str, str], Awaitable[bool]] | None = None,
        ttl_for: Callable[[str, str], int] | None = None,
    ) -> None:
        self._state = state
        self._book = book
        self._transport = transport
        self._tokens = tokens
        self._sender = sender
        self._fetch_sessions = fetch_sessions
        # The devices to send to without the network (None: ask ``fetch_sessions``): ``_fanout``.
        self._ready_devices = ready_devices or (lambda account: book.devices_with_sessions(account) or None)
        # Asked when relay answers NOT_FOUND for a device: True when the account's refreshed,
        # signed device list no longer names it (revoked), so that send is not a failure.
        self._device_gone = device_gone
        # Relay's TTL hint for (account, content type) when the caller gives none: a
        # disappearing conversation's timer (``_conversation``); 0 = the mailbox's own.
        self._ttl_for = ttl_for or (lambda account, content_type: 0)
        # The outbox in memory, in outbox order; what a previous run left is delivered first.
        self._queue: dict[Key, OutboxItem] = {(i.message_id, i.recipient_device): i for i in state.pending_outbox()}
        self._waiters: dict[Key, list[asyncio.Future[Outcome]]] = {}
        self._encrypts: list[tuple[EncryptRequest, asyncio.Future[list[Pending]]]] = []
        # Committed, waiting for the group fsync that lets them leave (``_queue_synced``), in commit order.
        self._unsynced: list[tuple[list[tuple[EncryptRequest, asyncio.Future[list[Pending]]]], list[list[OutboxItem] | Exception]]] = []
        self._syncing: asyncio.Task[None] | None = None
        self._fetching: dict[str, asyncio.Future[list[str]]] = {}
        self._wake = asyncio.Event()
        # Set when envelopes are queued or answered: the stream writer looks again.
        self._progress = asyncio.Event()
        # Sent on the current stream, no result yet (always the front of the queue).
        self._awaiting: set[Key] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self._lost_statuses = 0  # streams in a row whose status grpc.aio lost (see _drain)
        # Streams in a row on one endpoint that stored nothing and were answered UNAVAILABLE (see _stream).
        self._unstored_streams = 0

    # -- the callers' side ----------------------------------------------

    async def send(self, account: str, body: bytes, content_type: str, *, ttl_s: int = 0) -> list[SendReceipt]:
        (pending,) = await self._encrypt([(account, body)], content_type, ttl_s=ttl_s)
        receipts = []
        for outcome in await self._wait(pending):
            if isinstance(outcome, Failed):
                if outcome.code == "NOT_FOUND" and self._device_gone is not None:
                    if await self._device_gone(account, outcome.recipient_device):
                        continue
                if outcome.code == "UNAVAILABLE":
                    raise ServiceUnavailable(f"not acknowledged, kept in the outbox: {outcome.message}")
                raise RequestRejected(outcome.code, outcome.message)
            receipts.append(outcome)
        return receipts

    async def send_many(self, messages: Sequence[tuple[str, bytes]], content_type: str, *, ttl_s: int = 0) -> list[Outcome]:
        batches = await self._encrypt(messages, content_type, ttl_s=ttl_s)
        return await self._wait([p for pending in batches for p in pending])

    async def send_request(self, request: EncryptRequest) -> list[Outcome]:
        """One request to exactly the devices it lists, no lookup (``_healing``: retry requests, re-sends)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Pending]] = loop.create_future()
        if not self._encrypts:
            loop.call_soon(self._commit_encrypts)
        self._encrypts.append((request, future))
        (pending,) = await self._committed([future])
        return await self._wait(pending)

    async def flush(self) -> list[Outcome]:
        return await self._await(list(self._queue.values()))

    async def _sessions_for(self, account: str) -> list[str]:
        """Devices of ``account`` with a session; one bundle fetch per account however many callers wait."""
        devices = self._ready_devices(account)
        if devices is not None:
            return devices
        fetching = self._fetching.get(account)
        if fetching is not None:
            return await asyncio.shield(fetching)
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._fetching[account] = future
        try:
            devices = await self._fetch_sessions(account)
            future.set_result(devices)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here; waiters re-raise it
            raise
        finally:
            del self._fetching[account]
        return devices

    async def _encrypt(
        self, messages: Sequence[tuple[str, bytes]], content_type: str, *, ttl_s: int = 0
    ) -> list[list[Pending]]:
        """Encrypts in order, in the loop turn's shared transaction; the envelopes are queued on return."""
        requests = [
            EncryptRequest(
                account, tuple(await self._sessions_for(account)), body, content_type,
                ttl_s=ttl_s or self._ttl_for(account, content_type),
            )
            for account, body in messages
        ]
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in requests]
        if not self._encrypts:
            loop.call_soon(self._commit_encrypts)
        self._encrypts.extend(zip(requests, futures))
        return await self._committed(futures)

    async def _committed(self, futures: list[asyncio.Future[list[Pending]]]) -> list[list[Pending]]:
        """The commit's envelopes, with outcome futures registered at the commit.

        Registered there, not when the caller resumes: under load the caller resumed
        tens of milliseconds after the commit, by when the flusher had already sent
        its envelopes and settled them, and it was told "no longer queued" for a
        message that was stored (loaded drills: several a second).
        """
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:  # cancelled, or one request failed: nobody waits for the others
            for future in futures:
                if future.done() and not future.cancelled() and future.exception() is None:
                    self._unregister(future.result())
            raise

    def _commit_encrypts(self) -> None:
        """Group commit: every request of this loop turn in one transaction, queued once it is on disk.

        The transaction commits without fsync; ``_queue_synced`` waits for the
        group fsync (``_walsync``) that covers it, off the loop, before any of
        its envelopes can leave: commits made while a flush runs share the next.
        """
        submitted, self._encrypts = self._encrypts, []
        outcomes: list[list[OutboxItem] | Exception]
        try:
            outcomes = self._book.encrypt_many(sender=self._sender(), requests=[r for r, _ in submitted], durable=False)
        except Exception as exc:  # noqa: BLE001 - the commit itself failed: every caller hears it
            outcomes = [exc] * len(submitted)
        self._unsynced.append((submitted, outcomes))
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.create_task(self._queue_synced(), name="xchat.client.send-sync")

    async def _queue_synced(self) -> None:
        """Queues committed envelopes, in commit (= outbox) order, once a flush made them durable."""
        while self._unsynced:
            commits, self._unsynced = self._unsynced, []
            failure: OSError | None = None
            try:
                await self._state.sync()
            except OSError as exc:  # not known to be durable: must not leave; they stay in the outbox file
                log.warning("flushing the state file failed: %s", exc)
                failure = exc
            for submitted, outcomes in commits:
                self._queue_commit(submitted, outcomes, failure)
            self._progress.set()

    def _queue_commit(
        self,
        submitted: list[tuple[EncryptRequest, asyncio.Future[list[Pending]]]],
        outcomes: list[list[OutboxItem] | Exception],
        failure: OSError | None,
    ) -> None:
        for (_, future), outcome in zip(submitted, outcomes):
            if failure is not None and not isinstance(outcome, Exception):
                outcome = failure
            if isinstance(outcome, Exception):
                if not future.done():
                    future.set_exception(outcome)
                continue
            # Queued in commit order, which is outbox order.
            for item in outcome:
                self._queue[(item.message_id, item.recipient_device)] = item
            if not future.done():  # else its caller was cancelled: nobody waits for these
                future.set_result([(item, self._register((item.message_id, item.recipient_device))) for item in outcome])

    def _register(self, key: Key) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        return future

    def _unregister(self, pending: list[Pending]) -> None:
        for item, future in pending:
            key = (item.message_id, item.recipient_device)
            waiting = self._waiters.get(key)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._waiters[key]

    async def _await(self, items: list[OutboxItem]) -> list[Outcome]:
        """Waits for the outcomes of envelopes queued earlier (``flush``)."""
        pending: list[Pending] = []
        for item in items:
            key = (item.message_id, item.recipient_device)
            if key in self._queue:
                pending.append((item, self._register(key)))
            else:
                gone: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
                gone.set_result(Failed(item.message_id, item.recipient_device, "UNKNOWN", "no longer queued"))
                pending.append((item, gone))
        return await self._wait(pending)

    async def _wait(self, pending: list[Pending]) -> list[Outcome]:
        """Waits for these envelopes' outcomes, at most the transport's retry budget."""
        if not pending:
            return []
        try:
            if self._closed:
                raise ClientError("the client is closed")
            self._start()
            await asyncio.wait([f for _, f in pending], timeout=self._transport.retry_budget)
        finally:
            self._unregister(pending)
        return [
            f.result() if f.done()
            else Failed(item.message_id, item.recipient_device, "UNAVAILABLE", "no endpoint acknowledged it in time")
            for item, f in pending
        ]

    # -- the flusher ------------------------------------------------------

    def _start(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="xchat.client.flusher")
        self._wake.set()

    async def _flush_loop(self) -> None:
        failures = 0
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            # Someone waits: drain from the front. Nobody waits: what is left
            # stays in the outbox for the next send or flush (as before a restart).
            while self._queue and self._waiters and not self._closed:
                try:
                    delivered = await self._drain()
                except ServiceUnavailable as exc:  # no token: login found no endpoint
                    log.info("sending postponed: %s", exc)
                    delivered = False
                except ClientError as exc:
                    # Login refused (device revoked): tell the waiting callers, keep the outbox.
                    self._release_waiters(getattr(exc, "code", "UNAUTHENTICATED"), str(exc))
                    break
                if delivered:
                    failures = self._lost_statuses = 0
                    continue
                await asyncio.sleep(RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)])
                failures += 1

    def _sealed(self, item: OutboxItem) -> bool:
        return self._book.delivery.key_for(item.recipient_device) is not None

    async def _drain(self) -> bool:
        """Sends from the front of the queue until it is empty; False when something must be retried."""
        front = list(itertools.islice(self._queue.values(), 2))
        sealed = self._sealed(front[0])
        # No token on the sealed path: the call must not name us.
        token = "" if sealed else await self._tokens.token()
        target = self._transport.endpoint
        stub = relay_pb2_grpc.RelayStub(self._transport.channel("relay"))
        try:
            if len(front) == 1 and not sealed:
                # A lone envelope (one send at a time): a unary call is the cheapest round trip.
                result = await stub.Send(request(front[0]), timeout=self._transport.failover_after, metadata=metadata(token))
                self._settle([result])
                return True
            return await self._stream(stub, token, target, sealed=sealed)
        except grpc.aio.AioRpcError as exc:
            log.info("send to %s failed: %s %s", target, exc.code().name, exc.details())
            if exc.code() == grpc.StatusCode.CANCELLED:
                # grpc.aio reports a task cancelled mid-call this way: never a refusal.
                if self._closed:
                    raise asyncio.CancelledError() from exc
                return False
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                if sealed:
                    self._book.delivery.forget(front[0].recipient_device)
                else:
                    self._tokens.invalidate()
            elif exc.code() in RETRYABLE:
                self._transport.fail_over(target, f"{exc.code().name}: {exc.details()}")
            elif status_lost(exc) and self._lost_statuses < LOST_STATUS_RETRIES:
                # grpc.aio puts INTERNAL in place of the server's status when the server ends
                # a stream while one of our writes is in flight: the answer is unknown, so the
                # same envelopes go again (relay de-duplicates by message id), a bounded number of times.
                self._lost_statuses += 1
            else:
                # Refused for good (bad input, rate limit): keeping them would only retry for ever.
                refused = front[:1] if len(front) == 1 else [self._queue[k] for k in self._awaiting if k in self._queue]
                self._settle_refused(refused, exc.code().name, exc.details() or "")
                return True
            return False
        finally:
            self._awaiting.clear()

    async def _stream(self, stub: relay_pb2_grpc.RelayStub, token: str, target: str, *, sealed: bool = False) -> bool:
        """One SendStream that lives while there is work: new envelopes join it as they are queued.

        Batches are written in queue order while up to ``ROUND_MAX`` envelopes
        await their results; results come back per batch, so callers resume in
        waves and their next envelopes overlap the ones in flight. A retryable
        failure stops the writing: the stream ends once what is in flight
        settled, and the next one starts again from the front (the failed
        envelope first), so nothing newer overtakes it from here on.
        """
        halted = False
        # Set when this call is over. grpc.aio leaves the request iterator of a call that ended
        # with an error status running: this one, parked on ``_progress``, woke for the next stream's envelopes,
        # counted the front of the queue as in flight and wrote it to the dead call. The next
        # stream, which starts its writes after what is in flight, then skipped that envelope
        # for good while it sent and stored the later ones (flapping drill: a sender's message
        # stored 10 s late, the recipient's order buffer holding the rest, reorders at the end).
        ended = False
        fell_back = False
        stored_any = unavailable_any = False

        def same_kind(items: list[OutboxItem]) -> list[OutboxItem]:
            """The leading run of ``items`` this stream may carry (sealed or not, like the stream)."""
            return list(itertools.takewhile(lambda i: self._sealed(i) == sealed, items))

        async def batches() -> AsyncIterator[relay_pb2.SendBatch]:
            while not halted and not ended and self._waiters:
                # In flight = the front of the queue: every envelope before the
                # first unsent one was sent on this stream (or the stream halted).
                room = ROUND_MAX - len(self._awaiting)
                unsent = same_kind(list(itertools.islice(self._queue.values(), len(self._awaiting), len(self._awaiting) + room)))
                if unsent:
                    size = min(SEND_BATCH, max(MIN_BATCH, -(-len(unsent) // WAVES)))
                    for chunk in chunks(unsent, size, SEND_BATCH_BYTES):
                        if ended:
                            return
                        self._awaiting.update((i.message_id, i.recipient_device) for i in chunk)
                        yield relay_pb2.SendBatch(envelopes=[self._wire(i, sealed) for i in chunk])
                    continue
                if not self._awaiting:
                    return  # idle: end the stream; the next send starts a new one
                self._progress.clear()
                await self._progress.wait()

        call = stub.SendSealed(batches(), metadata=anonymous_metadata()) if sealed else stub.SendStream(batches(), metadata=metadata(token))
        try:
            while True:
                # Silence while envelopes are in flight means a frozen or cut-off region.
                # (asyncio.timeout: 3.11's wait_for can drop a cancellation that meets the answer.)
                async with asyncio.timeout(self._transport.failover_after):
                    response = await call.read()
                if response is grpc.aio.EOF:
                    break
                assert isinstance(response, relay_pb2.SendBatchResult)
                refused = self._refused_keys(response.results) if sealed else 0
                fell_back = fell_back or refused > 0
                stored_any = stored_any or any(r.error_code == 0 for r in response.results)
                unavailable_any = unavailable_any or any(r.error_code == UNAVAILABLE for r in response.results)
                if not self._settle(response.results, sealed=sealed):
                    halted = True
        except asyncio.TimeoutError:
            log.info("send stream to %s went silent with %d envelopes in flight", target, len(self._awaiting))
            call.cancel()
            self._transport.fail_over(target, "send stream silent")
            return False
        finally:
            ended = True
            call.cancel()
        self._count_unstored(target, stored=stored_any, unavailable=unavailable_any)
        # A fallback to the authenticated path is progress, not a failure to back off from.
        return (not halted or fell_back) and not self._awaiting

    def _count_unstored(self, target: str, *, stored: bool, unavailable: bool) -> None:
        """Fails over after ``UNSTORED_STREAMS_FAILOVER`` streams in a row stored nothing and got UNAVAILABLE.

        A region cut off from the others (a partition) still answers, quickly: its relay
        finds no quorum and answers each envelope UNAVAILABLE. The stream itself works,
        so neither the call status nor silence moves the client, and it retried the same
        region until the partition healed (8 s in the partition drill under load). One
        such stream can be a passing election; two in a row that stored nothing are a
        region that cannot store: move (the home probe brings the client back).
        """
        if stored:
            self._unstored_streams = 0
            return
        if not unavailable:
            return
        self._unstored_streams += 1
        if self._unstored_streams >= UNSTORED_STREAMS_FAILOVER:
            self._unstored_streams = 0
            self._transport.fail_over(target, "every envelope answered UNAVAILABLE")

    def _wire(self, item: OutboxItem, sealed: bool) -> relay_pb2.SendRequest:
        wire = request(item)
        if sealed:
            wire.delivery_key = self._book.delivery.key_for(item.recipient_device) or b""
        return wire

    def _refused_keys(self, results: Sequence[relay_pb2.SendResult]) -> int:
        """Forgets the delivery keys sealed results refused; how many."""
        refused = [r.recipient_device_id for r in results if r.error_code == UNAUTHENTICATED]
        for device in refused:
            log.info("device %s refused our delivery key: sending to it authenticated", device)
            self._book.delivery.forget(device)
        return len(refused)

    def _settle(self, results: Sequence[relay_pb2.SendResult], *, sealed: bool = False) -> bool:
        """Resolves answered envelopes; False when one must be retried (it stays queued, in place)."""
        done: list[tuple[Key, Outcome]] = []
        all_settled = True
        for result in results:
            key = (bytes(result.message_id), result.recipient_device_id)
            self._awaiting.discard(key)
            if key not in self._queue:
                continue
            if result.error_code == 0:
                done.append((key, SendReceipt(key[0], key[1], bytes(result.receipt), result.duplicate)))
            elif result.error_code == UNAVAILABLE or (sealed and result.error_code == UNAUTHENTICATED):
                # Sealed and refused: stays in place, resent authenticated (its key is forgotten).
                all_settled = False
                log.info("envelope %s not stored yet: %s", key[0].hex(), result.error_message)
            else:
                done.append((key, Failed(key[0], key[1], code_name(result.error_code), result.error_message)))
        self._resolve(done)
        self._progress.set()
        return all_settled

    def _settle_refused(self, items: list[OutboxItem], code: str, message: str) -> None:
        self._resolve(
            [((i.message_id, i.recipient_device), Failed(i.message_id, i.recipient_device, code, message)) for i in items]
        )

    def _resolve(self, done: list[tuple[Key, Outcome]]) -> None:
        if not done:
            return
        # Book-keeping only: a row lost to power loss is resent and de-duplicated.
        with self._state.transaction(durable=False):
            self._state.remove_outbox_many(key for key, _ in done)
        for key, outcome in done:
            self._queue.pop(key, None)
            if isinstance(outcome, Failed):
                log.warning("message %s to %s was refused: %s", key[0].hex(), key[1], outcome.message)
            for future in self._waiters.pop(key, []):
                if not future.done():
                    future.set_result(outcome)

    def _release_waiters(self, code: str, message: str) -> None:
        """Answers every waiting caller without touching the outbox (the envelopes stay queued)."""
        for key, waiting in self._waiters.items():
            for future in waiting:
                if not future.done():
                    future.set_result(Failed(key[0], key[1], code, message))
        self._waiters.clear()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._syncing is not None:
            # Lets a flush in flight end (its thread cannot be stopped); what it covers stays in the outbox.
            await asyncio.gather(self._syncing, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        self._release_waiters("UNAVAILABLE", "the client closed; kept in the outbox")
