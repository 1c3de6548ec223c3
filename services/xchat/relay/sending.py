"""Accepting envelopes: validate, bound, store durably, then notify.

A send is answered only after JetStream's publish ack, which with R3 and one
replica per region means a quorum of regions holds the envelope. The
JetStream ``Nats-Msg-Id`` — sha256(recipient, client message id), nothing of
the sender (issue 17) — makes a retried send a no-op within the duplicate
window: it is answered with the original's sequence and ``duplicate``; past
the window, the recipient SDK's id set catches the copy. A retry that arrives
while the original is still being replicated gets JetStream's "duplicate
message id is in process" (10158): that is not an outage, so the publish is
repeated (bounded by the call's timeout) until the original's ack answers it.

Disappearing messages: a sender may hint a per-envelope TTL (whole seconds,
the conversation's timer); it becomes the ``Nats-TTL`` header of the stored
message (the stream allows per-message TTLs), clamped to the mailbox TTL, so
JetStream removes the envelope when it is due, delivered or not. The hint is
the only thing relay learns beyond what it stored before.

After the ack a tiny wake-up is published on ``xchat.ntf.<device>`` (core
NATS, fire and forget) so the recipient's mailbox stream reads at once. Its
payload is the stored sequence (ASCII digits): the mailbox reads from its
nearest replica, which may not have applied the write yet when the wake-up
arrives (the ack needs a quorum, not every region), and the sequence tells it
to keep re-reading until that replica has caught up. Mailbox also polls, so a
lost wake-up only delays delivery.

Hedged writes (ADR 0013): a publish waits at most ``HEDGE_AFTER_S`` for the
mailbox stream; when it has no leader (no responders, timeout, JetStream
unavailable) the same bytes, with the same ``Nats-Msg-Id``, go to the hedge
stream, whose leader is kept in another region, so a send is acknowledged
after a quorum write without waiting for the mailbox stream's election
(4-9 s). The answer is the same (a quorum of regions holds the envelope): RPO
stays 0. A primary publish that was still in flight may also commit later:
the recipient's SDK drops the copy by message id. Envelopes carry relay's
accept time (strictly increasing per process), by which mailbox merges the
two streams. Hedged wake-ups name the sequence as ``h<seq>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import PubAck
from nats.js.client import JetStreamContext

from xchat.core import metrics
from xchat.core.devices import DeviceDirectory
from xchat.core.envelopes import StoredEnvelope
from xchat.core.errors import InvalidArgument, NotFound, ResourceExhausted, Unauthenticated, Unavailable
from xchat.core.ids import DeviceId, MessageId
from xchat.core.store import (
    HEDGE_STREAM,
    HEDGE_WAKEUP_PREFIX,
    MAILBOX_STREAM,
    TRANSIENT_API_ERRORS,
    Store,
    hedge_subject,
    mailbox_subject,
    notify_subject,
    translate,
)
from xchat.core.tokens import Principal
from xchat.relay.sealed import Access, check_delivery_key, receipt_of, sealed_access

log = logging.getLogger(__name__)

# nats-server: JSStreamStoreFailedF carries "maximum messages per subject exceeded".
PER_SUBJECT_LIMIT_TEXT = "maximum messages per subject exceeded"
# nats-server JSStreamDuplicateMessageConflict: the same Nats-Msg-Id is still being proposed.
DUPLICATE_IN_PROCESS = 10158
# Pauses between publishes of an id still in process (the original's quorum write takes a round trip).
IN_PROCESS_RETRY_S = (0.005, 0.01, 0.02, 0.05, 0.1)
# How long a publish waits for the mailbox stream before writing to the hedge
# stream instead (ADR 0013). A publish ack takes ~1-3 ms with a leader; an
# election takes 4-9 s. Shorter hedges more often under load spikes (each one
# costs a second quorum write and, sometimes, a duplicate the SDK drops).
HEDGE_AFTER_S = 0.25
# A leader that dies right after acknowledging a write may take it with it from
# the followers' view until the next leader is elected (followers learn a commit
# with the leader's next append): so before the first hedged envelope for a
# recipient, relay copies the envelopes the mailbox stream acknowledged for it in
# the last RECENT_PRIMARY_S to the hedge stream too (same bytes and message id),
# and the recipient reads them in order (the later copy is dropped by message id).
RECENT_PRIMARY_S = 2.0
# A publish left unanswered this long while the mailbox stream acknowledges others is not
# slow but stuck on its id (seen after a region kill under load: envelopes in flight through
# the killed relay, resent through another, got no answer from the new leader until the
# killed region returned, ~10 s, while later envelopes were stored; the receiver's order
# buffer then held those later ones too). It is hedged like a leaderless one.
STUCK_AFTER_S = 1.0
RECENT_PRIMARY_PER_RECIPIENT = 32
RECENT_PRIMARY_RECIPIENTS = 10_000
# Bytes of envelopes kept for that, all recipients together (the oldest go first).
RECENT_PRIMARY_MAX_BYTES = 16 * 1024 * 1024


def _leaderless(exc: BaseException) -> bool:
    """The mailbox stream cannot take a write now (no leader or no quorum), as opposed to a refusal."""
    if isinstance(exc, nats.js.errors.APIError):
        return isinstance(exc, nats.js.errors.ServiceUnavailableError) or exc.err_code in TRANSIENT_API_ERRORS
    return isinstance(exc, (nats.errors.Error, asyncio.TimeoutError))


# JetStream's per-message TTL header (nats-server >= 2.11, the stream's allow_msg_ttl).
TTL_HEADER = "Nats-TTL"


def envelope_ttl(ttl_s: int, mailbox_ttl_s: int) -> int | None:
    """The ``Nats-TTL`` (seconds) for a sender's hint; None: the stream's own ``max_age`` applies."""
    if ttl_s <= 0 or ttl_s >= mailbox_ttl_s > 0:
        return None
    return ttl_s


def dedup_id(recipient: DeviceId, message_id: MessageId) -> str:
    """The JetStream de-duplication id: the recipient and the client's message id, hashed."""
    return hashlib.sha256(recipient.encode() + b"\x00" + message_id).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Receipt:
    """``sequence`` stays inside relay (wake-ups); senders get ``receipt`` (``xchat.relay.sealed``)."""

    message_id: MessageId
    sequence: int
    duplicate: bool
    stored_at_ms: int
    receipt: bytes
    # Stored in the hedge stream (its sequence is that stream's).
    hedged: bool = False


def ack_errors_on_futures(js: JetStreamContext) -> None:
    """Makes ``publish_async`` futures fail with the server's refusal instead of never resolving.

    nats.py (2.16, issue nats-io/nats.py#985, fix proposed in #994) builds the
    error of an ack that refuses a publish with ``APIError.from_error``, which
    raises instead of returning: the exception escapes into the subscription
    task and the future is left pending, so a pipelined send to a full mailbox
    waited for its timeout and was answered UNAVAILABLE (the SDK then retried it
    in every region) instead of RESOURCE_EXHAUSTED. Installed before the first
    ``publish_async``, whose reply subscription takes the handler from the instance.
    """
    original = js._handle_async_reply

    async def handle(msg: Msg) -> None:
        try:
            await original(msg)
        except nats.js.errors.APIError as exc:
            # The reply subject is <inbox prefix>.<nuid>.<token>; futures are keyed by token.
            futures: dict[str, asyncio.Future[PubAck]] = getattr(js, "_publish_async_futures", {})
            future = futures.get(msg.subject.rsplit(".", 1)[-1])
            if future is not None and not future.done():
                future.set_exception(exc)

    setattr(js, "_handle_async_reply", handle)


class Relay:
    def __init__(self, store: Store, devices: DeviceDirectory, *, max_ciphertext_bytes: int) -> None:
        self._store = store
        ack_errors_on_futures(store.js)
        self._devices = devices
        self._max_ciphertext = max_ciphertext_bytes
        # Per recipient, the turn of the latest pipelined publish (see send_pipelined).
        self._last_turn: dict[DeviceId, asyncio.Future[None]] = {}
        # Accept times handed out, strictly increasing: mailbox merges the streams by them.
        self._last_stamp = 0
        # Loop time of the last acknowledgement from the mailbox stream: a timeout while
        # others are acknowledged is a slow stream, not a leaderless one (no hedge).
        self._primary_acked_at = float("-inf")
        # Per recipient: (loop time, bytes, headers) of recent mailbox-stream writes (RECENT_PRIMARY_S).
        self._recent_primary: OrderedDict[DeviceId, deque[tuple[float, bytes, dict[str, str]]]] = OrderedDict()
        self._recent_bytes = 0
        # Hedged writes of one recipient leave one at a time, in the order they began.
        self._hedge_locks: dict[DeviceId, tuple[asyncio.Lock, int]] = {}
        # Per recipient, the envelopes stamped and not yet stored (or failed), by stamp: a
        # hedged write waits for every earlier one (ADR 0013, "stamp order in the hedge").
        self._unsettled: dict[DeviceId, dict[int, asyncio.Future[None]]] = {}

    async def sealed_access(self, recipient: DeviceId, delivery_key: bytes) -> Access:
        """How a sealed send to ``recipient`` is authorised (``xchat.relay.sealed``); Unauthenticated if not."""
        return await sealed_access(self._devices, recipient, delivery_key)

    async def validate(
        self, sender: Principal | None, recipient: DeviceId, ciphertext: bytes, delivery_key: bytes | None = None
    ) -> None:
        """``sender`` None: unidentified delivery, authorised by ``delivery_key`` alone."""
        if not ciphertext:
            raise InvalidArgument("ciphertext is empty")
        if len(ciphertext) > self._max_ciphertext:
            raise InvalidArgument(f"ciphertext is {len(ciphertext)} bytes; the limit is {self._max_ciphertext}")
        if sender is None:
            await check_delivery_key(self._devices, recipient, delivery_key or b"")
            return
        record = await self._devices.cached(recipient)
        if record is None or record.revoked:
            raise NotFound(f"recipient device {recipient} does not exist or has been revoked")
        sender_record = await self._devices.cached(sender.device)
        if sender_record is None or sender_record.revoked:
            raise Unauthenticated(f"your device {sender.device} has been revoked; register it again")

    def _stamp(self) -> int:
        self._last_stamp = max(int(time.time() * 1000), self._last_stamp + 1)
        return self._last_stamp

    def _message(
        self, recipient: DeviceId, message_id: MessageId, ciphertext: bytes, ttl_s: int = 0
    ) -> tuple[bytes, dict[str, str]]:
        """The stored bytes and headers; the envelope counts as unsettled until ``_settled``."""
        stamp = self._stamp()
        self._unsettled.setdefault(recipient, {})[stamp] = asyncio.get_running_loop().create_future()
        envelope = StoredEnvelope(message_id, ciphertext, stamp)
        # Stored with the message: derived from nothing of the sender's, and one
        # retry from another region or connection still hits the same id.
        headers = {"Nats-Msg-Id": dedup_id(recipient, message_id)}
        ttl = envelope_ttl(ttl_s, self._store.settings.mailbox_ttl_s)
        if ttl is not None:
            headers[TTL_HEADER] = f"{ttl}s"
        return envelope.encode(), headers

    async def send(
        self,
        sender: Principal,
        recipient: DeviceId,
        message_id: MessageId,
        ciphertext: bytes,
        *,
        timeout: float,
        ttl_s: int = 0,
    ) -> Receipt:
        await self.validate(sender, recipient, ciphertext)
        data, headers = self._message(recipient, message_id, ciphertext, ttl_s)

        def publish(wait: float) -> Awaitable[PubAck]:
            return self._store.js.publish(
                mailbox_subject(recipient), data, timeout=wait, stream=MAILBOX_STREAM, headers=headers
            )

        stamp = self._last_stamp
        try:
            receipt = await self._stored(
                recipient, message_id, publish, self._hedge(recipient, stamp, data, headers), timeout=timeout
            )
        finally:
            self._settled(recipient, stamp)
        if not receipt.hedged:
            self._note_primary(recipient, data, headers)
        await self._notify(recipient, receipt.sequence, hedged=receipt.hedged)
        return receipt

    def _settled(self, recipient: DeviceId, stamp: int) -> None:
        waiting = self._unsettled.get(recipient)
        future = waiting.pop(stamp, None) if waiting is not None else None
        if future is not None and not future.done():
            future.set_result(None)
        if waiting is not None and not waiting:
            del self._unsettled[recipient]

    async def _after_earlier(self, recipient: DeviceId, stamp: int, deadline: float) -> None:
        """Until every envelope to ``recipient`` stamped before ``stamp`` is stored somewhere (or failed).

        Mailbox merges the streams by stamp, but reads each stream in its own order:
        a later envelope hedged before an earlier one (whose mailbox-stream publish
        was still waiting, or that failed slower) would be read first and stay first.
        """
        earlier = [f for s, f in self._unsettled.get(recipient, {}).items() if s < stamp and not f.done()]
        left = deadline - asyncio.get_running_loop().time()
        if earlier and left > 0:
            await asyncio.wait(earlier, timeout=left)

    def _note_primary(self, recipient: DeviceId, data: bytes, headers: dict[str, str]) -> None:
        now = asyncio.get_running_loop().time()
        recent = self._recent_primary.pop(recipient, None) or deque()
        recent.append((now, data, headers))
        self._recent_bytes += len(data)
        while recent and (len(recent) > RECENT_PRIMARY_PER_RECIPIENT or recent[0][0] < now - RECENT_PRIMARY_S):
            self._recent_bytes -= len(recent.popleft()[1])
        self._recent_primary[recipient] = recent  # most recently written last
        while self._recent_primary and (
            len(self._recent_primary) > RECENT_PRIMARY_RECIPIENTS or self._recent_bytes > RECENT_PRIMARY_MAX_BYTES
        ):
            _, dropped = self._recent_primary.popitem(last=False)
            self._recent_bytes -= sum(len(d) for _, d, _ in dropped)

    def _hedge(
        self, recipient: DeviceId, stamp: int, data: bytes, headers: dict[str, str]
    ) -> Callable[[float], Awaitable[PubAck]]:
        async def publish(wait: float) -> PubAck:
            deadline = asyncio.get_running_loop().time() + wait
            # Hedged in stamp order: after every earlier envelope to this recipient is stored.
            await self._after_earlier(recipient, stamp, deadline - HEDGE_AFTER_S)
            lock, users = self._hedge_locks.get(recipient) or (asyncio.Lock(), 0)
            self._hedge_locks[recipient] = (lock, users + 1)
            try:
                async with lock:
                    await self._copy_recent(recipient, deadline)
                    left = max(deadline - asyncio.get_running_loop().time(), 0.001)
                    return await self._store.js.publish(
                        hedge_subject(recipient), data, timeout=left, stream=HEDGE_STREAM, headers=headers
                    )
            finally:
                # The lock lives while anyone holds or awaits it (a new one would let two writers race).
                lock, users = self._hedge_locks[recipient]
                if users == 1:
                    del self._hedge_locks[recipient]
                else:
                    self._hedge_locks[recipient] = (lock, users - 1)

        return publish

    async def _copy_recent(self, recipient: DeviceId, deadline: float) -> None:
        """Copies the recipient's recent mailbox-stream writes to the hedge stream, oldest first (once)."""
        recent = self._recent_primary.pop(recipient, None)
        if not recent:
            return
        self._recent_bytes -= sum(len(d) for _, d, _ in recent)
        horizon = asyncio.get_running_loop().time() - RECENT_PRIMARY_S
        for at, data, headers in recent:
            if at < horizon:
                continue
            left = max(deadline - asyncio.get_running_loop().time(), 0.001)
            try:
                await self._store.js.publish(hedge_subject(recipient), data, timeout=left, stream=HEDGE_STREAM, headers=headers)
            except (nats.errors.Error, asyncio.TimeoutError):
                return  # the hedged envelope itself is what the caller waits for

    async def send_pipelined(
        self,
        sender: Principal | None,
        recipient: DeviceId,
        message_id: MessageId,
        ciphertext: bytes,
        *,
        timeout: float,
        delivery_key: bytes | None = None,
        ttl_s: int = 0,
    ) -> Receipt:
        """Like ``send`` but shares one reply subscription across many in-flight publishes.

        Does not wake the recipient: the caller batches wake-ups with ``notify``.

        Publishes to one recipient leave in the order the calls began (their
        acks are still awaited concurrently): a call that waits in ``validate``
        for a device lookup is not overtaken by a later one that finds the
        cache warm, so a SendStream stores each conversation in its order.
        """
        before, mine = self._turn(recipient)
        try:
            await self.validate(sender, recipient, ciphertext, delivery_key)
            if before is not None:
                await asyncio.shield(before)
            # Stamped in turn order: the stamp orders the two streams' records.
            data, headers = self._message(recipient, message_id, ciphertext, ttl_s)
            stamp = self._last_stamp
        except BaseException:
            self._done(recipient, mine)
            raise

        first = True

        async def publish(wait: float) -> PubAck:
            nonlocal first
            # One deadline over the stall and the ack. Not publish_async's wait_stall: its
            # wait_for runs every publish in a task of its own, so each envelope of a batch
            # left one loop turn after the previous one (the turn order above), and nats-py's
            # flusher wrote the connection — a TLS record and a syscall — once per envelope
            # (16 % of the relay process at 64 in flight). Without it a batch's publishes
            # all leave in one turn and one write.
            async with asyncio.timeout(wait):
                future = await self._store.js.publish_async(
                    mailbox_subject(recipient), data, stream=MAILBOX_STREAM, headers=headers
                )
                if first:
                    # Handed to the connection: the next envelope may go (it is stored after this
                    # one). Not when this attempt failed or timed out before that (a stalled
                    # connection on a loaded machine): the next would overtake it, so the turn is
                    # kept until this envelope is stored, here or in the hedge stream (ADR 0013).
                    first = False
                    self._done(recipient, mine)
                return await future

        try:
            receipt = await self._stored(
                recipient, message_id, publish, self._hedge(recipient, stamp, data, headers), timeout=timeout
            )
            if receipt.hedged:
                # Its wake-up at once, before the next envelope of this recipient may be stored
                # in the mailbox stream: a read that finds that one must know of this one.
                await self._notify(recipient, receipt.sequence, hedged=True)
        finally:
            self._done(recipient, mine)
            self._settled(recipient, stamp)
        if not receipt.hedged:
            self._note_primary(recipient, data, headers)
        return receipt

    def _turn(self, recipient: DeviceId) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """This call's place in the recipient's publish order: (the predecessor's turn, ours)."""
        before = self._last_turn.get(recipient)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last_turn[recipient] = mine
        return (before if before is not None and not before.done() else None), mine

    def _done(self, recipient: DeviceId, mine: asyncio.Future[None]) -> None:
        if not mine.done():
            mine.set_result(None)
        if self._last_turn.get(recipient) is mine:
            del self._last_turn[recipient]

    async def _stored(
        self,
        recipient: DeviceId,
        message_id: MessageId,
        publish: Callable[[float], Awaitable[PubAck]],
        hedge: Callable[[float], Awaitable[PubAck]],
        *,
        timeout: float,
    ) -> Receipt:
        """Awaits the publish ack (quorum of regions) and translates store errors.

        The mailbox stream gets ``HEDGE_AFTER_S``; when it has no leader the
        envelope goes to the hedge stream with the rest of ``timeout``. An id
        still in process is published again until the original's ack answers
        it (as a duplicate, with the original's sequence).

        A timeout alone hedges only when the mailbox stream acknowledged nothing
        of this process for ``HEDGE_AFTER_S``, or this publish has gone unanswered
        for ``STUCK_AFTER_S``: a stream that answers others is slow (a loaded
        machine), not leaderless, and hedging every slow publish
        would double the writes of an overloaded store and leave a copy in each
        stream. The publish is then sent again (same ``Nats-Msg-Id``: the stream
        answers a duplicate with the original's sequence) and the check repeats,
        so an outage that starts meanwhile still hedges within ``HEDGE_AFTER_S``.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout
        attempt = 0
        hedged = False
        while True:
            target = hedge if hedged else publish
            wait = deadline - loop.time() if hedged else min(HEDGE_AFTER_S, timeout)
            try:
                ack = await target(max(wait, 0.001))
                if not hedged:
                    self._primary_acked_at = max(self._primary_acked_at, loop.time())
                break
            except nats.js.errors.APIError as exc:
                pause = IN_PROCESS_RETRY_S[min(attempt, len(IN_PROCESS_RETRY_S) - 1)]
                if exc.err_code == DUPLICATE_IN_PROCESS and not hedged and loop.time() - started >= HEDGE_AFTER_S:
                    # Still "in process" after the hedge delay: the proposal it names was made by a
                    # leader (or through a relay) that died with it, and the id stays pending on the
                    # new leader for many seconds (region-kill under load: 10-11 s, while later
                    # envelopes of the same sender were stored). Hedge it: a copy in both streams
                    # is dropped by message id when read.
                    log.info("envelope for %s still in process after %.2f s: hedged", recipient, loop.time() - started)
                    hedged = True
                    metrics.publish_failed("hedged in process")
                    continue
                if exc.err_code == DUPLICATE_IN_PROCESS and loop.time() + pause < deadline:
                    attempt += 1
                    await asyncio.sleep(pause)
                    continue
                if not hedged and _leaderless(exc) and loop.time() < deadline:
                    hedged = True
                    metrics.publish_failed("hedged")
                    continue
                error = _publish_error(exc, recipient)
                if not isinstance(error, ResourceExhausted):  # a full mailbox is the recipient's quota, not a fault
                    metrics.publish_failed(f"APIError {exc.err_code}")
                raise error from exc
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                slow = (
                    isinstance(exc, asyncio.TimeoutError)
                    and loop.time() - self._primary_acked_at < HEDGE_AFTER_S
                    and loop.time() - started < STUCK_AFTER_S
                )
                if not hedged and slow and loop.time() < deadline:
                    metrics.publish_failed("slow")
                    continue  # acknowledged others just now: slow, not leaderless
                if not hedged and loop.time() < deadline:
                    hedged = True
                    metrics.publish_failed("hedged")
                    continue
                metrics.publish_failed(type(exc).__name__)
                raise translate(exc) from exc
        metrics.PUBLISH_SECONDS.observe(loop.time() - started)
        return Receipt(
            message_id,
            ack.seq,
            bool(ack.duplicate),
            int(time.time() * 1000),
            receipt_of(recipient, message_id),
            hedged=hedged,
        )

    async def notify(self, stored: Mapping[DeviceId, int], hedged: Mapping[DeviceId, int] | None = None) -> None:
        """One wake-up per recipient and stream, naming the highest sequence just stored for it;
        the hedge stream's first (a read woken for the mailbox stream must know of them)."""
        for recipient, sequence in (hedged or {}).items():
            await self._notify(recipient, sequence, hedged=True)
        for recipient, sequence in stored.items():
            await self._notify(recipient, sequence)

    async def _notify(self, recipient: DeviceId, sequence: int, *, hedged: bool = False) -> None:
        payload = str(sequence).encode()
        try:
            await self._store.nc.publish(notify_subject(recipient), HEDGE_WAKEUP_PREFIX + payload if hedged else payload)
        except nats.errors.Error:
            pass  # the mailbox poll delivers anyway


def _publish_error(exc: nats.js.errors.APIError, recipient: DeviceId) -> Exception:
    if PER_SUBJECT_LIMIT_TEXT in (exc.description or ""):
        return ResourceExhausted(
            f"mailbox of device {recipient} is full (quota reached); the recipient must read and acknowledge first"
        )
    return Unavailable(f"message store refused the envelope: {exc.description}")
