"""Reading and removing one device's envelopes in the mailbox stream.

No consumer per device: reads are JetStream *direct gets* ("next message on
subject xchat.mbx.<device> from sequence n"), answered by any replica, usually
the one in the caller's own region. The read position is the caller's
cursor; nothing about a device's reading lives on the server between calls,
so a device can reconnect to any region.

Removal has two forms (ADR 0008): ``purge_through`` removes every envelope of
one device up to a sequence in one replicated operation (used when the device
has acknowledged everything below it), ``delete`` removes single sequences
(holes, and acknowledgements outside a Sync call).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from xchat.core.envelopes import StoredEnvelope
from xchat.core.errors import Unavailable
from xchat.core.ids import DeviceId
from xchat.core.store import MAILBOX_STREAM, Store, mailbox_subject

log = logging.getLogger(__name__)
DIRECT_GET = f"$JS.API.DIRECT.GET.{MAILBOX_STREAM}"
DELETE = f"$JS.API.STREAM.MSG.DELETE.{MAILBOX_STREAM}"
PURGE = f"$JS.API.STREAM.PURGE.{MAILBOX_STREAM}"
# Concurrent deletes issued for one batch of acks.
DELETE_CONCURRENCY = 32
# nats-server: JSSequenceNotFoundErrF / "no message found" on delete.
ERR_SEQUENCE_NOT_FOUND = 10057
# What the leader answers when a delete finds the sequence already removed (a concurrent
# ack or a lingering purge got there first): "sequence N not found". Not a failure.
ERR_SEQUENCE_ALREADY_GONE = 10043
# Replies buffered for all reads of the process before NATS calls it a slow
# consumer: several full batches (128 × 128 KiB each).
REPLIES_PENDING_BYTES = 256 * 1024 * 1024
# A direct get answers in ~1 ms from a live replica; one that reached a frozen
# replica is asked again after this long (seconds), not after the store timeout.
DIRECT_ATTEMPT_S = 0.5


class _NoFirstReply(Exception):
    """No replica answered one attempt of a read (it may have gone to a frozen one)."""


@dataclass(frozen=True, slots=True)
class Raw:
    """One message of a batched direct get."""

    sequence: int
    subject: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Stored:
    sequence: int
    envelope: StoredEnvelope


@dataclass(frozen=True, slots=True)
class Batch:
    """What one read found: the envelopes, and the sequences it could not decode.

    ``last`` is the highest sequence the read looked at (0 when nothing), so
    the caller's cursor also passes undecodable records.
    """

    envelopes: list[Stored]
    undecodable: list[int]
    last: int
    # Read from a replica because the stream's leader did not answer in time.
    leader_failed: bool = False


class Replies:
    """One wildcard inbox subscription that receives the replies of every batched read.

    A subscription per read would cost a SUB and an UNSUB, each propagated to
    every server of the cluster, for every read (issue 18); here a read costs
    one publish and a dict entry.
    """

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix = f"{nc.new_inbox()}."
        self._queues: dict[str, asyncio.Queue[Msg]] = {}
        self._subscribed = False
        self._lock = asyncio.Lock()
        self._next = 0

    async def open(self) -> tuple[str, asyncio.Queue[Msg]]:
        """A fresh reply subject and the queue its replies arrive on; ``close`` it after."""
        if not self._subscribed:
            async with self._lock:
                if not self._subscribed:
                    await self._nc.subscribe(
                        f"{self._prefix}*", cb=self._dispatch, pending_bytes_limit=REPLIES_PENDING_BYTES
                    )
                    self._subscribed = True
        self._next += 1
        token = str(self._next)
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._queues[token] = queue
        return f"{self._prefix}{token}", queue

    def close(self, subject: str) -> None:
        self._queues.pop(subject[len(self._prefix) :], None)

    async def _dispatch(self, msg: Msg) -> None:
        queue = self._queues.get(msg.subject[len(self._prefix) :])
        if queue is not None:  # else: a late reply to a read that gave up
            queue.put_nowait(msg)


class MailboxReader:
    """One stream's device subjects: the mailbox stream, or (``stream``/``subject_of``) the hedge stream (ADR 0013)."""

    def __init__(
        self,
        store: Store,
        *,
        timeout: float,
        stream: str = MAILBOX_STREAM,
        subject_of: Callable[[str], str] = mailbox_subject,
        replies: Replies | None = None,
        owned_leader_s: float = 0.0,
    ) -> None:
        self._nc = store.nc
        # > 0: ownership checks ask the leader first (the hedge stream, ADR 0013: a replica may
        # not hold a just-written record, and an ack it cannot see would be ignored).
        self._owned_leader_s = owned_leader_s
        self._timeout = timeout
        self._replies = replies if replies is not None else Replies(store.nc)
        self._subject_of = subject_of
        self._direct_get = f"$JS.API.DIRECT.GET.{stream}"
        self._delete = f"$JS.API.STREAM.MSG.DELETE.{stream}"
        self._purge = f"$JS.API.STREAM.PURGE.{stream}"
        self._leader_get = f"$JS.API.STREAM.MSG.GET.{stream}"

    @property
    def replies(self) -> Replies:
        return self._replies

    async def direct_batch(self, *, start: int, subject: str, limit: int) -> list[Raw]:
        """Up to ``limit`` mailbox records on ``subject`` from sequence ``start``, in order.

        One batched direct get (nats-server ≥ 2.11): a replica streams the
        batch to the reply subject and ends it with a 204 (or 404 when nothing
        matches), so a backlog costs one round trip per batch.

        A request that reached a frozen or cut-off replica (its routes not yet
        closed) is never answered: when nothing came back within
        ``DIRECT_ATTEMPT_S`` it is asked again (any replica may answer; a read
        is idempotent), until the store timeout (ADR 0013).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            attempt = min(DIRECT_ATTEMPT_S, max(deadline - loop.time(), 0.001))
            try:
                return await self._direct_batch_once(start=start, subject=subject, limit=limit, first_reply_s=attempt)
            except _NoFirstReply as exc:
                if loop.time() >= deadline:
                    raise Unavailable("mailbox store did not answer a read in time") from exc

    async def _direct_batch_once(self, *, start: int, subject: str, limit: int, first_reply_s: float) -> list[Raw]:
        reply, queue = await self._replies.open()
        out: list[Raw] = []
        try:
            request = {"seq": start, "next_by_subj": subject, "batch": limit}
            try:
                await self._nc.publish(self._direct_get, json.dumps(request).encode(), reply=reply)
            except nats.errors.Error as exc:
                raise Unavailable("mailbox store unreachable") from exc
            loop = asyncio.get_running_loop()
            first = True
            while len(out) < limit:
                if queue.empty():
                    # A deadline per wait, without the task asyncio.wait_for would start for each.
                    try:
                        async with asyncio.timeout_at(loop.time() + (first_reply_s if first else self._timeout)):
                            msg = await queue.get()
                    except TimeoutError as exc:
                        if first:
                            raise _NoFirstReply() from exc
                        raise Unavailable("mailbox store did not answer a read in time") from exc
                else:
                    msg = queue.get_nowait()
                first = False
                headers = msg.headers or {}
                status = headers.get("Status")
                if status in ("204", "404"):
                    break  # end of batch / nothing (more) stored on the subject
                if status is not None:
                    raise Unavailable(f"mailbox store refused a read: {status} {headers.get('Description', '')}".strip())
                out.append(Raw(int(headers["Nats-Sequence"]), headers.get("Nats-Subject", ""), msg.data))
        finally:
            self._replies.close(reply)
        return out

    async def leader_batch(self, *, start: int, subject: str, limit: int, timeout: float) -> list[Raw]:
        """Like ``direct_batch``, but answered by the stream's leader (one request per record).

        A replica that has just come back (thawed, restarted) answers direct
        gets from a stale view; the leader holds every acknowledged record. For
        the hedge stream's rare reads where that matters (ADR 0013).
        """
        out: list[Raw] = []
        seq = start
        while len(out) < limit:
            request = json.dumps({"seq": seq, "next_by_subj": subject}).encode()
            try:
                reply = await self._nc.request(self._leader_get, request, timeout=timeout)
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                raise Unavailable("the stream's leader did not answer a read") from exc
            body = json.loads(reply.data or b"{}")
            if "error" in body:
                if body["error"].get("code") == 404:
                    break
                raise Unavailable(f"mailbox store refused a read: {body['error'].get('description')}")
            message = body.get("message") or {}
            seq = int(message.get("seq", 0))
            if seq < start:
                break
            out.append(Raw(seq, message.get("subject", ""), base64.b64decode(message.get("data") or "")))
            seq += 1
        return out

    async def read_after(self, device: DeviceId, cursor: int, limit: int, *, leader_s: float = 0.0) -> Batch:
        """Up to ``limit`` records of ``device`` with sequence > cursor, in order.

        ``leader_s`` > 0: asked of the stream's leader first (that long per
        record), then of any replica if the leader does not answer.
        """
        subject = self._subject_of(device)
        leader_failed = False
        if leader_s > 0:
            try:
                raw = await self.leader_batch(start=cursor + 1, subject=subject, limit=limit, timeout=leader_s)
                return self._batch(raw)
            except Unavailable as exc:
                # No leader (its region is down, or a hand-over): a replica's view is the best there
                # is, and may lack the newest records (ADR 0013: a reorder risk, hence logged).
                log.info("%s: leader read failed (%s); reading a replica", self._direct_get.rsplit(".", 1)[-1], exc)
                leader_failed = True
        raw = await self.direct_batch(start=cursor + 1, subject=subject, limit=limit)
        return self._batch(raw, leader_failed=leader_failed)

    @staticmethod
    def _batch(raw: list[Raw], *, leader_failed: bool = False) -> Batch:
        envelopes: list[Stored] = []
        undecodable: list[int] = []
        for record in raw:
            envelope = StoredEnvelope.decode(record.data)
            if envelope is None:
                undecodable.append(record.sequence)
            else:
                envelopes.append(Stored(record.sequence, envelope))
        return Batch(envelopes, undecodable, raw[-1].sequence if raw else 0, leader_failed)

    async def owned(self, device: DeviceId, sequence: int) -> bool:
        """True when ``sequence`` holds an envelope of ``device``.

        Asked as "the device's first record at or after ``sequence``", so a
        sequence of another device and one that holds nothing take the same
        path and give the same answer: no one learns whether someone else's
        envelope is still there (no read receipt through acks).
        """
        subject = self._subject_of(device)
        if self._owned_leader_s > 0:
            try:
                got = await self.leader_batch(start=sequence, subject=subject, limit=1, timeout=self._owned_leader_s)
                return bool(got) and got[0].sequence == sequence
            except Unavailable:
                pass  # no leader: a replica's answer (a miss leaves the envelope to come back)
        got = await self.direct_batch(start=sequence, subject=subject, limit=1)
        return bool(got) and got[0].sequence == sequence

    async def purge_through(self, device: DeviceId, floor: int) -> None:
        """Removes every record of ``device`` with sequence ≤ ``floor``: one replicated operation."""
        request = {"filter": self._subject_of(device), "seq": floor + 1}
        try:
            reply = await self._nc.request(self._purge, json.dumps(request).encode(), timeout=self._timeout)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise Unavailable("mailbox store did not confirm an acknowledgement; retry it") from exc
        body = json.loads(reply.data or b"{}")
        if "error" in body:
            raise Unavailable(f"mailbox store refused an acknowledgement: {body['error'].get('description')}")

    async def purge_device(self, device: DeviceId) -> None:
        """Removes every record of ``device`` (a revoked device's mailbox): one replicated operation."""
        try:
            reply = await self._nc.request(PURGE, json.dumps({"filter": mailbox_subject(device)}).encode(), timeout=self._timeout)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise Unavailable("mailbox store did not confirm the purge; retry it") from exc
        body = json.loads(reply.data or b"{}")
        if "error" in body:
            raise Unavailable(f"mailbox store refused the purge: {body['error'].get('description')}")

    async def delete(self, sequences: list[int]) -> int:
        """Deletes single sequences (already gone counts 0); returns how many this call removed."""
        gate = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def one(seq: int) -> bool:
            async with gate:
                try:
                    reply = await self._nc.request(
                        self._delete, json.dumps({"seq": seq, "no_erase": True}).encode(), timeout=self._timeout
                    )
                except (nats.errors.Error, asyncio.TimeoutError) as exc:
                    raise Unavailable("mailbox store did not confirm an acknowledgement; retry it") from exc
                body = json.loads(reply.data or b"{}")
                if "error" in body:
                    if body["error"].get("err_code") in (ERR_SEQUENCE_NOT_FOUND, ERR_SEQUENCE_ALREADY_GONE):
                        return False  # already deleted: acks are idempotent
                    raise Unavailable(f"mailbox store refused an acknowledgement: {body['error'].get('description')}")
                return bool(body.get("success"))

        return sum(await asyncio.gather(*(one(s) for s in sequences)))
