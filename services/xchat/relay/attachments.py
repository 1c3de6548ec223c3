"""Encrypted attachment blobs in a JetStream object-store bucket: claim, append, read.

Guarantee: an answered upload call means a quorum of regions holds every
chunk up to ``committed`` (R3, one replica per region): a region killed
mid-upload loses nothing acknowledged, and the client resumes in another
region from exactly there.

Layout in the bucket's stream (``OBJ_xchat_attachments``; ids are 32 hex
characters of the client's 16 random bytes):

* ``$O.<bucket>.M.<id>``: the claim, a small JSON record (owner account,
  size, chunk size, expiry, complete). Written first with
  ``Nats-Expected-Last-Subject-Sequence: 0`` (the first claimant wins), and
  replaced (rollup) by the complete record once the last chunk is stored.
* ``$O.<bucket>.C.<id>.<index>``: chunk ``index``, each written once
  (expected last subject sequence 0): a retried or raced write of a stored
  chunk is answered as stored, never appended twice. Every chunk is
  ``CHUNK_BYTES`` long but the last, so an offset names its chunk and a
  download from an offset is one direct get per chunk.

Delete (``delete``, the claimant only): the claim is replaced (rollup, compare-and-set on
its sequence) by one that expired now, so every relay refuses downloads of it
(``NOT_FOUND``) and the id can never be claimed again; then each stored chunk's
subject is rolled up to an empty message, which drops the chunk's bytes from
every replica (relay's NATS user has no purge or delete on the bucket: a rollup
on the subjects it may write is its only way to drop bytes, and only
subject by subject); then the quota reservation is released. A delete
interrupted after the claim step is finished by calling it again (the claim
says "deleted": every chunk subject is rolled up again, idempotently, and 0
bytes are reported).

Chunks must arrive in order: the next index is the highest stored plus one
(a wildcard get of the last chunk subject from the stream leader), cached per process and
corrected by the compare-and-set when another region appended meanwhile.
Expiry is the stream's ``max_age``; the claim records when the first byte
expires and downloads stop there. The server sees ciphertext only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from xchat.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted, Unavailable
from xchat.core.permissions import ATTACHMENTS_BUCKET, ATTACHMENTS_STREAM
from xchat.relay.attachment_quota import AttachmentQuota

ATTACHMENT_ID_BYTES = 16
# Chunk size: under nats-server's 1 MB max_payload with headers, and one gRPC message.
CHUNK_BYTES = 256 * 1024
# JetStream API errors (nats-server errors.json).
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_STREAM_STORE_FAILED = 10077  # "maximum bytes exceeded" when the bucket is full
# Claims and next-chunk positions remembered per process (bounded LRU).
CACHE_ENTRIES = 4096
DIRECT_GET = f"$JS.API.DIRECT.GET.{ATTACHMENTS_STREAM}"
LEADER_GET = f"$JS.API.STREAM.MSG.GET.{ATTACHMENTS_STREAM}"
ROLLUP = {"Nats-Rollup": "sub"}


def attachment_id(value: bytes) -> str:
    if len(value) != ATTACHMENT_ID_BYTES:
        raise InvalidArgument(f"attachment_id must be {ATTACHMENT_ID_BYTES} random bytes, got {len(value)}")
    return value.hex()


def chunk_count(size: int) -> int:
    return max(1, -(-size // CHUNK_BYTES))


def chunk_subject(attachment: str, index: int) -> str:
    return f"$O.{ATTACHMENTS_BUCKET}.C.{attachment}.{index}"


def claim_subject(attachment: str) -> str:
    return f"$O.{ATTACHMENTS_BUCKET}.M.{attachment}"


@dataclass(frozen=True, slots=True)
class Claim:
    owner: str
    size: int
    created_ms: int
    expires_ms: int
    complete: bool = False
    chunk_bytes: int = CHUNK_BYTES
    # Deleted by its owner (``Attachments.delete``): expired at the delete, never live again.
    deleted: bool = False

    @classmethod
    def decode(cls, raw: bytes) -> Claim:
        """A stored claim; fields a later release added are ignored (a rolling upgrade's older replica)."""
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class UploadState:
    attachment: str
    size: int
    committed: int
    complete: bool
    expires_ms: int
    chunk_bytes: int = CHUNK_BYTES


@dataclass(frozen=True, slots=True)
class _Stored:
    subject: str
    seq: int
    data: bytes


@dataclass(frozen=True, slots=True)
class _Cached:
    claim: Claim
    claim_seq: int


class _Lru(OrderedDict[str, object]):
    def put(self, key: str, value: object) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > CACHE_ENTRIES:
            self.popitem(last=False)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Attachments:
    def __init__(
        self, nc: NatsClient, js: JetStreamContext, quota: AttachmentQuota, *, max_bytes: int, ttl_s: int, timeout_s: float
    ) -> None:
        self._js = js
        self._nc = nc  # direct gets are plain requests (a wildcard last-by-subject has no nats-py call)
        self._quota = quota
        self.max_bytes = max_bytes
        self._ttl_ms = ttl_s * 1000
        self._timeout = timeout_s
        self._claims: _Lru = _Lru()
        self._next: _Lru = _Lru()

    # -- reads -----------------------------------------------------------------

    async def _get(self, subject: str, *, leader: bool = False) -> _Stored | None:
        """The last message on ``subject`` (wildcards allowed); None when there is none.

        From the nearest replica (a direct get), or with ``leader`` from the stream
        leader: replicas apply writes a moment after the quorum acknowledged them, so
        whatever decides (claims, the next chunk) or finds nothing asks the leader.
        """
        request = json.dumps({"last_by_subj": subject}).encode()
        if leader:
            reply = await self._nc.request(LEADER_GET, request, timeout=self._timeout)
            body = json.loads(reply.data)
            if "error" in body:
                if body["error"].get("code") == 404:
                    return None
                raise Unavailable(f"attachment store answered: {body['error'].get('description', body['error'])}")
            message = body["message"]
            return _Stored(message["subject"], int(message["seq"]), base64.b64decode(message.get("data") or b""))
        reply = await self._nc.request(DIRECT_GET, request, timeout=self._timeout)
        headers = reply.headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status is not None:
            raise Unavailable(f"attachment store answered {status}: {headers.get('Description', '')}")
        return _Stored(headers["Nats-Subject"], int(headers["Nats-Sequence"]), bytes(reply.data))

    async def _claim(self, attachment: str, *, fresh: bool = False) -> _Cached | None:
        cached = self._claims.get(attachment)
        if isinstance(cached, _Cached) and not fresh:
            return cached
        msg = await self._get(claim_subject(attachment), leader=True)
        if msg is None:
            return None
        found = _Cached(Claim.decode(msg.data), msg.seq)
        self._claims.put(attachment, found)
        return found

    async def _next_index(self, attachment: str, *, fresh: bool = False) -> int:
        cached = self._next.get(attachment)
        if isinstance(cached, int) and not fresh:
            return cached
        last = await self._get(f"$O.{ATTACHMENTS_BUCKET}.C.{attachment}.*", leader=True)
        index = 0 if last is None else int(last.subject.rsplit(".", 1)[1]) + 1
        self._next.put(attachment, index)
        return index

    def _state(self, attachment: str, claim: Claim, next_index: int) -> UploadState:
        committed = claim.size if claim.complete else min(claim.size, next_index * claim.chunk_bytes)
        return UploadState(attachment, claim.size, committed, claim.complete, claim.expires_ms, claim.chunk_bytes)

    def _live(self, attachment: str, found: _Cached | None, now_ms: int) -> _Cached:
        if found is None or found.claim.expires_ms <= now_ms:
            raise NotFound(f"no attachment {attachment[:8]}…: unknown or expired")
        return found

    # -- upload ----------------------------------------------------------------

    async def begin(self, owner: str, attachment: str, size: int) -> UploadState:
        """Claims ``attachment`` for ``owner`` (reserving quota), or reports an earlier claim's progress."""
        if not 0 < size <= self.max_bytes:
            raise InvalidArgument(
                f"attachment size {size} bytes is outside 1..{self.max_bytes} ({self.max_bytes / 1024**2:.0f} MiB,"
                " the server's XCHAT_ATTACHMENT_MAX_BYTES)"
            )
        now = _now_ms()
        found = await self._claim(attachment, fresh=True)
        if found is None:
            claim = Claim(owner=owner, size=size, created_ms=now, expires_ms=now + self._ttl_ms)
            await self._quota.reserve(owner, attachment, size, expires_ms=claim.expires_ms, now_ms=now)
            try:
                ack = await self._js.publish(
                    claim_subject(attachment), _encode(claim), stream=ATTACHMENTS_STREAM, timeout=self._timeout,
                    headers={"Nats-Expected-Last-Subject-Sequence": "0"},
                )
                found = _Cached(claim, ack.seq)
                self._claims.put(attachment, found)
                self._next.put(attachment, 0)
            except nats.js.errors.APIError as exc:
                if exc.err_code != ERR_WRONG_LAST_SEQUENCE:
                    raise _store_error(exc) from exc
                found = await self._claim(attachment, fresh=True)  # raced: someone claimed it first
        live = self._live(attachment, found, now)
        if live.claim.owner != owner:
            raise PermissionDenied("that attachment id is claimed by another account; choose a fresh random id")
        if live.claim.size != size:
            raise InvalidArgument(f"attachment was claimed for {live.claim.size} bytes, not {size}")
        return self._state(attachment, live.claim, await self._next_index(attachment, fresh=True))

    async def append(self, owner: str, attachment: str, index: int, data: bytes) -> UploadState:
        """Stores chunk ``index``; idempotent. The last chunk completes the attachment."""
        now = _now_ms()
        live = self._live(attachment, await self._claim(attachment), now)
        claim = live.claim
        if claim.owner != owner:
            raise PermissionDenied("that attachment id is claimed by another account: only its uploader writes to it")
        if claim.complete:
            return self._state(attachment, claim, chunk_count(claim.size))
        count = chunk_count(claim.size)
        if not 0 <= index < count:
            raise InvalidArgument(f"chunk index {index} is outside 0..{count - 1} for {claim.size} bytes")
        expected = claim.chunk_bytes if index < count - 1 else claim.size - (count - 1) * claim.chunk_bytes
        if len(data) != expected:
            raise InvalidArgument(f"chunk {index} must be {expected} bytes, got {len(data)}")
        next_index = await self._next_index(attachment)
        if index > next_index:
            next_index = await self._next_index(attachment, fresh=True)  # another region may have appended
        if index > next_index:
            raise FailedPrecondition(
                f"chunk {index} cannot be stored before chunk {next_index}: resume from byte {next_index * claim.chunk_bytes}"
            )
        if index == next_index:
            try:
                await self._js.publish(
                    chunk_subject(attachment, index), data, stream=ATTACHMENTS_STREAM, timeout=self._timeout,
                    headers={"Nats-Expected-Last-Subject-Sequence": "0"},
                )
            except nats.js.errors.APIError as exc:
                if exc.err_code != ERR_WRONG_LAST_SEQUENCE:
                    raise _store_error(exc) from exc
                # Already stored (a retry whose answer was lost, or another region's relay).
            next_index = index + 1
            self._next.put(attachment, next_index)
        if next_index >= count:
            claim = await self._complete(attachment, live)
        return self._state(attachment, claim, next_index)

    async def _complete(self, attachment: str, live: _Cached) -> Claim:
        done = replace(live.claim, complete=True)
        try:
            await self._js.publish(
                claim_subject(attachment), _encode(done), stream=ATTACHMENTS_STREAM, timeout=self._timeout,
                headers={**ROLLUP, "Nats-Expected-Last-Subject-Sequence": str(live.claim_seq)},
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code != ERR_WRONG_LAST_SEQUENCE:
                raise _store_error(exc) from exc
            again = await self._claim(attachment, fresh=True)  # completed by another region meanwhile
            if again is None or not again.claim.complete:
                raise Unavailable("attachment claim changed while completing; retry") from exc
            return again.claim
        self._claims.put(attachment, _Cached(done, live.claim_seq))
        return done

    # -- delete ----------------------------------------------------------------

    async def delete(self, owner: str, attachment: str) -> int:
        """Deletes ``owner``'s attachment before its expiry; returns the ciphertext bytes dropped.

        PERMISSION_DENIED for another account's attachment (nothing changes), NOT_FOUND for an
        unknown or expired one. Deleting again answers 0 bytes (a retry whose answer was lost).
        """
        now = _now_ms()
        found = await self._claim(attachment, fresh=True)
        if found is None:
            raise NotFound(f"no attachment {attachment[:8]}…: unknown or expired")
        if found.claim.owner != owner:
            raise PermissionDenied("that attachment was uploaded by another account: only its uploader deletes it")
        if found.claim.deleted:
            await self._drop_chunks(attachment, found.claim)  # a retry: finishes an interrupted delete
            await self._quota.release(owner, attachment)
            return 0
        if found.claim.expires_ms <= now:
            raise NotFound(f"no attachment {attachment[:8]}…: unknown or expired")
        gone = replace(found.claim, expires_ms=now, deleted=True)
        try:
            ack = await self._js.publish(
                claim_subject(attachment), _encode(gone), stream=ATTACHMENTS_STREAM, timeout=self._timeout,
                headers={**ROLLUP, "Nats-Expected-Last-Subject-Sequence": str(found.claim_seq)},
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code != ERR_WRONG_LAST_SEQUENCE:
                raise _store_error(exc) from exc
            raise Unavailable("the attachment changed while deleting (an upload completed); retry") from exc
        self._claims.put(attachment, _Cached(gone, ack.seq))
        dropped = await self._drop_chunks(attachment, gone)
        await self._quota.release(owner, attachment)
        return dropped

    async def _drop_chunks(self, attachment: str, claim: Claim) -> int:
        """Rolls every stored chunk's subject up to an empty message (idempotent); the bytes they held."""
        stored = await self._next_index(attachment, fresh=True)
        for index in range(stored):
            await self._js.publish(
                chunk_subject(attachment, index), b"", stream=ATTACHMENTS_STREAM, timeout=self._timeout, headers=ROLLUP
            )
        self._next.pop(attachment, None)
        return min(claim.size, stored * claim.chunk_bytes)

    # -- download --------------------------------------------------------------

    async def size_for_download(self, attachment: str) -> Claim:
        """The complete attachment's claim (NOT_FOUND unknown/expired, FAILED_PRECONDITION still uploading)."""
        # From the leader, every time: one small read per download, and never a replica's stale view.
        live = self._live(attachment, await self._claim(attachment, fresh=True), _now_ms())
        if not live.claim.complete:
            raise FailedPrecondition("that attachment is still being uploaded; download it once its message arrives")
        return live.claim

    async def chunk(self, attachment: str, claim: Claim, index: int) -> bytes:
        if claim.expires_ms <= _now_ms():
            raise NotFound("that attachment expired")
        msg = await self._get(chunk_subject(attachment, index))
        if msg is None:  # not yet applied by the nearest replica, or really gone
            msg = await self._get(chunk_subject(attachment, index), leader=True)
        if msg is None or not msg.data:  # an empty chunk is a deleted one (a ciphertext chunk never is)
            raise NotFound(f"chunk {index} of that attachment is gone (expired or deleted)")
        return msg.data


def _encode(claim: Claim) -> bytes:
    return json.dumps(asdict(claim), separators=(",", ":")).encode()


def _store_error(exc: nats.js.errors.APIError) -> Exception:
    text = (exc.description or "").lower()
    if "maximum bytes" in text or "insufficient resources" in text:
        return ResourceExhausted("the attachment store is full; try again later or ask the operator to raise XCHAT_ATTACHMENTS_MAX_BYTES")
    return exc


STORE_FAILURES: tuple[type[BaseException], ...] = (nats.errors.Error, asyncio.TimeoutError)
