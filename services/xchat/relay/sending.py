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
"""

from __future__ import annotations

import asyncio
import hashlib
import time
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
from xchat.core.store import MAILBOX_STREAM, Store, mailbox_subject, notify_subject, translate
from xchat.core.tokens import Principal
from xchat.relay.sealed import Access, check_delivery_key, receipt_of, sealed_access

# nats-server: JSStreamStoreFailedF carries "maximum messages per subject exceeded".
PER_SUBJECT_LIMIT_TEXT = "maximum messages per subject exceeded"
# nats-server JSStreamDuplicateMessageConflict: the same Nats-Msg-Id is still being proposed.
DUPLICATE_IN_PROCESS = 10158
# Pauses between publishes of an id still in process (the original's quorum write takes a round trip).
IN_PROCESS_RETRY_S = (0.005, 0.01, 0.02, 0.05, 0.1)
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

    def _message(
        self, recipient: DeviceId, message_id: MessageId, ciphertext: bytes, ttl_s: int = 0
    ) -> tuple[bytes, dict[str, str]]:
        envelope = StoredEnvelope(message_id, ciphertext, int(time.time() * 1000))
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

        def publish() -> Awaitable[PubAck]:
            return self._store.js.publish(
                mailbox_subject(recipient), data, timeout=timeout, stream=MAILBOX_STREAM, headers=headers
            )

        receipt = await self._stored(recipient, message_id, publish, timeout=timeout)
        await self._notify(recipient, receipt.sequence)
        return receipt

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
            data, headers = self._message(recipient, message_id, ciphertext, ttl_s)
            if before is not None:
                await asyncio.shield(before)
        except BaseException:
            self._done(recipient, mine)
            raise

        async def publish() -> PubAck:
            # One deadline over the stall and the ack. Not publish_async's wait_stall: its
            # wait_for runs every publish in a task of its own, so each envelope of a batch
            # left one loop turn after the previous one (the turn order above), and nats-py's
            # flusher wrote the connection — a TLS record and a syscall — once per envelope
            # (16 % of the relay process at 64 in flight). Without it a batch's publishes
            # all leave in one turn and one write.
            async with asyncio.timeout(timeout):
                try:
                    future = await self._store.js.publish_async(
                        mailbox_subject(recipient), data, stream=MAILBOX_STREAM, headers=headers
                    )
                finally:
                    self._done(recipient, mine)  # written to the connection (or failed): the next may go
                return await future

        return await self._stored(recipient, message_id, publish, timeout=timeout)

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

    @staticmethod
    async def _stored(
        recipient: DeviceId, message_id: MessageId, publish: Callable[[], Awaitable[PubAck]], *, timeout: float
    ) -> Receipt:
        """Awaits the publish ack (quorum of regions) and translates store errors.

        An id still in process is published again until the original's ack
        answers it (as a duplicate, with the original's sequence).
        """
        started = asyncio.get_running_loop().time()
        deadline = started + timeout
        attempt = 0
        while True:
            try:
                ack = await publish()
                break
            except nats.js.errors.APIError as exc:
                pause = IN_PROCESS_RETRY_S[min(attempt, len(IN_PROCESS_RETRY_S) - 1)]
                if exc.err_code == DUPLICATE_IN_PROCESS and asyncio.get_running_loop().time() + pause < deadline:
                    attempt += 1
                    await asyncio.sleep(pause)
                    continue
                error = _publish_error(exc, recipient)
                if not isinstance(error, ResourceExhausted):  # a full mailbox is the recipient's quota, not a fault
                    metrics.publish_failed(f"APIError {exc.err_code}")
                raise error from exc
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                metrics.publish_failed(type(exc).__name__)
                raise translate(exc) from exc
        metrics.PUBLISH_SECONDS.observe(asyncio.get_running_loop().time() - started)
        return Receipt(message_id, ack.seq, bool(ack.duplicate), int(time.time() * 1000), receipt_of(recipient, message_id))

    async def notify(self, stored: Mapping[DeviceId, int]) -> None:
        """One wake-up per recipient, naming the highest sequence just stored for it."""
        for recipient, sequence in stored.items():
            await self._notify(recipient, sequence)

    async def _notify(self, recipient: DeviceId, sequence: int) -> None:
        try:
            await self._store.nc.publish(notify_subject(recipient), str(sequence).encode())
        except nats.errors.Error:
            pass  # the mailbox poll delivers anyway


def _publish_error(exc: nats.js.errors.APIError, recipient: DeviceId) -> Exception:
    if PER_SUBJECT_LIMIT_TEXT in (exc.description or ""):
        return ResourceExhausted(
            f"mailbox of device {recipient} is full (quota reached); the recipient must read and acknowledge first"
        )
    return Unavailable(f"message store refused the envelope: {exc.description}")
