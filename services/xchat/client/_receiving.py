"""The receive path: the Sync loop, batched decryption, and acknowledgements that are never lost.

``messages()`` holds one Sync stream (backlog, then live), reconnecting and
failing over on its own. Each response (up to 128 envelopes) is decrypted in
order and committed in one durable SQLite transaction (ratchets, consumed
prekeys, plaintexts) before the app sees any of it; the only await inside a
batch is the directory check of a new session's sender, and the batch's
transaction is committed before it, so no other task ever finds one open.

Acknowledgements: ``ack()`` records the id as seen and the mailbox sequence
as pending in one (non-fsynced) transaction, then sends it on the live Sync
stream (which frees the server's delivery window and deletes at once). A
pending sequence is dropped only after a unary ``Ack`` answered for it (the
server's confirmation; acks are idempotent), so an ack queued when a stream
broke, or when the process stopped, is sent again; ``close()`` waits, bounded,
for the confirmations. Envelopes already seen or unreadable are acknowledged
the same way without reaching the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence

import grpc
import grpc.aio

from xchat.client._sessions import SessionBook
from xchat.client._state import InboxItem, LocalState
from xchat.client._tokens import Tokens
from xchat.client._transport import RETRYABLE, Transport, metadata, rejected
from xchat.client.crypto import Payload
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
# Refusals that will never change for these sequences: stop confirming them.
ACK_PERMANENT = {"PERMISSION_DENIED", "INVALID_ARGUMENT"}


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
    ) -> None:
        self._state = state
        self._book = book
        self._transport = transport
        self._tokens = tokens
        self._backlog_done = backlog_done
        self._directory_key = directory_key
        self._on_new_session = on_new_session
        # Sequences to send on the live Sync stream (all of them are also pending in state).
        self._outgoing: list[int] = []
        self._ack_wake = asyncio.Event()
        self._confirm_wake = asyncio.Event()
        self._confirmed = asyncio.Event()
        self._confirmer: asyncio.Task[None] | None = None
        self._closed = False

    # -- acknowledgements ----------------------------------------------

    async def ack(self, message: Message) -> None:
        # Not fsynced: on power loss the app may see this message again, never lose it.
        with self._state.transaction(durable=False):
            self._state.mark_seen(message.message_id)
            self._state.add_pending_acks([message.sequence])
        self._queue_acks([message.sequence])

    def _queue_acks(self, sequences: list[int]) -> None:
        self._outgoing.extend(sequences)
        self._ack_wake.set()
        self._start_confirmer()

    def _start_confirmer(self) -> None:
        self._confirmed.clear()
        self._confirm_wake.set()
        if self._confirmer is None or self._confirmer.done():
            self._confirmer = asyncio.create_task(self._confirm_loop(), name="xchat.client.ack-confirmer")

    async def _confirm_loop(self) -> None:
        """Confirms pending acks with unary ``Ack`` calls (≤ 1000 each) until none is left."""
        failures = 0
        while True:
            await self._confirm_wake.wait()
            self._confirm_wake.clear()
            while sequences := self._state.pending_acks()[:MAX_ACKS_PER_FRAME]:
                request = mailbox_pb2.AckRequest(sequences=sequences)
                try:
                    await self._tokens.authed(
                        lambda ch, t, md: mailbox_pb2_grpc.MailboxStub(ch).Ack(request, timeout=t, metadata=md),
                        service="mailbox",
                    )
                except ServiceUnavailable as exc:
                    log.info("acknowledgements not confirmed yet: %s", exc)
                    await asyncio.sleep(_backoff(failures))
                    failures += 1
                    continue
                except RequestRejected as exc:
                    if exc.code not in ACK_PERMANENT:
                        await asyncio.sleep(_backoff(failures))
                        failures += 1
                        continue
                    log.warning("dropping acknowledgements the server refuses: %s", exc)
                failures = 0
                with self._state.transaction(durable=False):
                    self._state.remove_pending_acks(sequences)
            if not self._confirm_wake.is_set():
                self._confirmed.set()

    async def _frames(self) -> AsyncIterator[mailbox_pb2.SyncRequest]:
        # A new call: acks meant for the previous one are confirmed by the confirmer;
        # sending them here would only cost the server a lookup per sequence.
        self._outgoing = []
        yield mailbox_pb2.SyncRequest()
        while True:
            while not self._outgoing:
                self._ack_wake.clear()
                await self._ack_wake.wait()
            frame, self._outgoing = self._outgoing[:MAX_ACKS_PER_FRAME], self._outgoing[MAX_ACKS_PER_FRAME:]
            yield mailbox_pb2.SyncRequest(ack_sequences=frame)

    # -- the Sync loop ----------------------------------------------------

    async def messages(self) -> AsyncGenerator[Message, None]:
        failures = 0
        if self._state.pending_acks():
            self._start_confirmer()  # left by a previous run or a broken stream
        while not self._closed:
            target = self._transport.endpoint
            try:
                token = await self._tokens.token()
            except ServiceUnavailable:
                # Login or refresh found no endpoint (regions failing over): keep trying.
                await asyncio.sleep(_backoff(failures))
                failures += 1
                continue
            stub = mailbox_pb2_grpc.MailboxStub(self._transport.channel("mailbox"))
            call = stub.Sync(self._frames(), metadata=metadata(token))
            try:
                async for response in call:
                    failures = 0
                    if response.envelopes:
                        for message in await self._open_batch(response.envelopes):
                            yield message
                    if response.HasField("backlog_done"):
                        self._backlog_done.set()
                if self._closed:
                    return
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED and self._closed:
                    return
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    self._tokens.invalidate()
                elif exc.code() in RETRYABLE or exc.code() in STREAM_RECONNECT:
                    self._transport.fail_over(target)
                else:
                    raise rejected(exc) from exc
                await asyncio.sleep(_backoff(failures))
                failures += 1
            except ServiceUnavailable:
                # A directory lookup while opening an envelope found no endpoint; the
                # envelope is not acked, so it comes back after the reconnect.
                self._transport.fail_over(target)
                await asyncio.sleep(_backoff(failures))
                failures += 1
            finally:
                call.cancel()

    async def _open_batch(self, envelopes: Sequence[mailbox_pb2.Envelope]) -> list[Message]:
        """Decrypts a response's envelopes in order; one durable commit for all of them."""
        messages: list[Message] = []
        skipped: list[int] = []
        self._state.begin()
        self._book.batch_begin()
        try:
            for envelope in envelopes:
                item = await self._open(envelope)
                if item is None:
                    skipped.append(envelope.sequence)
                else:
                    messages.append(_message(envelope, item))
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
        if skipped:
            self._queue_acks(skipped)
        return messages

    async def _open(self, envelope: mailbox_pb2.Envelope) -> InboxItem | None:
        """The plaintext of ``envelope``, staged in the open transaction; None when it must only be acked."""
        mid = bytes(envelope.message_id)
        if self._state.was_seen(mid):
            return None
        item = self._state.inbox_item(mid)
        if item is not None:
            return item  # decrypted before, not acknowledged yet
        opened = self._book.open(mid, envelope.ciphertext)
        if opened is None:
            return None
        if opened.new_session:
            # The sealed sender claim is only a claim until the initiator's
            # identity key matches the one the directory holds for that device.
            # Nothing stays open across the lookup: other tasks use this database.
            self._book.batch_flush()
            self._state.commit()
            self._book.batch_end()  # the send path may advance sessions while we wait
            try:
                published = await self._directory_key(opened.content.sender_account, opened.content.sender_device)
            finally:
                self._state.begin()
                self._book.batch_begin()
            if published != opened.their_identity_key:
                self._book.reject(opened, "sender identity does not match the directory")
                return None
            self._on_new_session()
        return self._book.stage(opened)

    async def close(self, *, confirm_within: float) -> None:
        """Stops receiving; waits up to ``confirm_within`` seconds for pending acks to be confirmed."""
        self._closed = True
        if self._confirmer is not None:
            if not self._confirmer.done():
                try:
                    await asyncio.wait_for(self._confirmed.wait(), confirm_within)
                except asyncio.TimeoutError:
                    log.info("closing with acknowledgements unconfirmed; the next run sends them")
            self._confirmer.cancel()
            await asyncio.gather(self._confirmer, return_exceptions=True)


def _message(envelope: mailbox_pb2.Envelope, item: InboxItem) -> Message:
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
