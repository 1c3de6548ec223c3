"""Reading and deleting one device's envelopes in the mailbox stream.

No consumer per device: reads are JetStream *direct gets* ("next message on
subject xchat.mbx.<device> from sequence n"), answered by any replica, usually
the one in the caller's own region. The read position is the caller's
cursor; nothing about a device's reading lives on the server between calls,
so a device can reconnect to any region.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

import nats.errors

from xchat.core.envelopes import StoredEnvelope
from xchat.core.errors import Unavailable
from xchat.core.ids import DeviceId
from xchat.core.store import MAILBOX_STREAM, Store, mailbox_subject

DIRECT_GET = f"$JS.API.DIRECT.GET.{MAILBOX_STREAM}"
DELETE = f"$JS.API.STREAM.MSG.DELETE.{MAILBOX_STREAM}"
# Concurrent deletes issued for one batch of acks.
DELETE_CONCURRENCY = 32
# nats-server: JSSequenceNotFoundErrF / "no message found" on delete.
ERR_SEQUENCE_NOT_FOUND = 10057


@dataclass(frozen=True, slots=True)
class Stored:
    sequence: int
    envelope: StoredEnvelope


class MailboxReader:
    def __init__(self, store: Store, *, timeout: float) -> None:
        self._nc = store.nc
        self._timeout = timeout

    async def _get(self, payload: dict[str, object]) -> tuple[int, str, bytes] | None:
        try:
            msg = await self._nc.request(DIRECT_GET, json.dumps(payload).encode(), timeout=self._timeout)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise Unavailable("mailbox store did not answer in time") from exc
        headers = msg.headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status is not None:
            raise Unavailable(f"mailbox store refused a read: {status} {headers.get('Description', '')}".strip())
        return int(headers["Nats-Sequence"]), headers.get("Nats-Subject", ""), msg.data

    async def read_after(self, device: DeviceId, cursor: int, limit: int) -> list[Stored]:
        """Up to ``limit`` envelopes of ``device`` with sequence > cursor, in order.

        One batched direct get (nats-server ≥ 2.11): the replica streams up to
        ``limit`` messages to a private inbox and ends with a 204 (or 404 when
        there is nothing), so a backlog costs one round trip per batch.
        """
        inbox = self._nc.new_inbox()
        subscription = await self._nc.subscribe(inbox, max_msgs=limit + 1)
        out: list[Stored] = []
        try:
            request = {"seq": cursor + 1, "next_by_subj": mailbox_subject(device), "batch": limit}
            await self._nc.publish(DIRECT_GET, json.dumps(request).encode(), reply=inbox)
            while True:
                try:
                    msg = await subscription.next_msg(timeout=self._timeout)
                except (nats.errors.Error, asyncio.TimeoutError) as exc:
                    raise Unavailable("mailbox store did not answer in time") from exc
                headers = msg.headers or {}
                status = headers.get("Status")
                if status in ("204", "404"):
                    break  # end of batch / nothing (more) stored for this device
                if status is not None:
                    raise Unavailable(f"mailbox store refused a read: {status} {headers.get('Description', '')}".strip())
                envelope = StoredEnvelope.decode(msg.data)
                if envelope is not None:
                    out.append(Stored(int(headers["Nats-Sequence"]), envelope))
                if len(out) >= limit:
                    break
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
        return out

    async def owner_subject(self, sequence: int) -> str | None:
        """The subject stored at ``sequence``; None when nothing is (already deleted)."""
        got = await self._get({"seq": sequence})
        return None if got is None else got[1]

    async def delete(self, sequences: list[int]) -> int:
        gate = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def one(seq: int) -> bool:
            async with gate:
                try:
                    reply = await self._nc.request(
                        DELETE, json.dumps({"seq": seq, "no_erase": True}).encode(), timeout=self._timeout
                    )
                except (nats.errors.Error, asyncio.TimeoutError) as exc:
                    raise Unavailable("mailbox store did not confirm an acknowledgement; retry it") from exc
                body = json.loads(reply.data or b"{}")
                if "error" in body:
                    if body["error"].get("err_code") == ERR_SEQUENCE_NOT_FOUND:
                        return False  # already deleted: acks are idempotent
                    raise Unavailable(f"mailbox store refused an acknowledgement: {body['error'].get('description')}")
                return bool(body.get("success"))

        return sum(await asyncio.gather(*(one(s) for s in sequences)))
