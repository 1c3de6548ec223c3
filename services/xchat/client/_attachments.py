"""Attachments in the SDK: encrypt, upload resumably, reference from a message; download, verify.

``upload`` encrypts a file under a fresh 32-byte key (``_attachment_cipher``)
and stores the ciphertext with the Attachments service in 256 KiB chunks;
each answer means a quorum of regions holds the chunks so far, so after any
interruption (connection lost, region killed, client closed and opened
again) the next attempt asks the server where it stopped and goes on from
there, in whatever region answers. A pending upload of a file path is kept
in the state file (id and key, sealed like every secret) until its message
is sent, so calling ``send_attachment`` again with the same unchanged file
resumes instead of starting over.

The message that references it (content type ``CONTENT_TYPE``, a small JSON
body travelling end-to-end encrypted like any message) carries the id, the
key, the file's size and the SHA-256 of the *plaintext*: chosen over the
ciphertext's because a resumed download can re-hash the verified prefix
already on disk. Each chunk's tag is checked as it arrives; the digest and
size when the last one has; the file appears at ``dest`` only after both.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import grpc
import grpc.aio

from xchat.client._attachment_cipher import KEY_BYTES, PLAIN_CHUNK, CiphertextReader, PlaintextWriter, chunk_count, ciphertext_size
from xchat.client._state import LocalState
from xchat.client._tokens import Tokens
from xchat.client._transport import RETRYABLE, Transport, metadata, rejected
from xchat.client.errors import AttachmentError, RequestRejected, ServiceUnavailable
from xchat.client.messages import Message
from xchat.v1 import attachments_pb2, attachments_pb2_grpc

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.xchat.attachment+json"
ID_BYTES = 16
# How long an upload or download keeps resuming through outages (a region's
# Raft groups elect new leaders within 4-9 s; calls fail over on their own).
RESUME_BUDGET_S = 120.0
RESUME_PAUSE_S = 0.5
# Largest pointer body accepted from a message (a few hundred bytes in practice).
MAX_POINTER_BYTES = 4096
PART_SUFFIX = ".xchat-part"
_PENDING = "attachment_upload:"

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Attachment:
    """An uploaded, end-to-end encrypted file, as a message references it.

    ``size`` and ``sha256`` (hex) are the plaintext file's; ``key`` (never sent
    to a server outside an end-to-end encrypted message) decrypts it.
    """

    attachment_id: str
    size: int
    sha256: str
    content_type: str
    name: str | None
    key: bytes = field(repr=False)

    def body(self) -> bytes:
        """The message body that references this attachment (content type ``CONTENT_TYPE``)."""
        return json.dumps({
            "v": 1, "id": self.attachment_id, "key": base64.b64encode(self.key).decode(), "size": self.size,
            "sha256": self.sha256, "type": self.content_type, "name": self.name,
        }, separators=(",", ":")).encode()


def pointer(message: Message) -> Attachment | None:
    """The attachment a message references (None for any other message; AttachmentError if malformed)."""
    if message.content_type != CONTENT_TYPE:
        return None
    if len(message.body) > MAX_POINTER_BYTES:
        raise AttachmentError("not_attachment", "attachment reference is too large")
    try:
        raw = json.loads(message.body)
        found = Attachment(
            attachment_id=str(raw["id"]), size=int(raw["size"]), sha256=str(raw["sha256"]),
            content_type=str(raw.get("type") or "application/octet-stream"),
            name=None if raw.get("name") is None else str(raw["name"]), key=base64.b64decode(raw["key"], validate=True),
        )
        bytes.fromhex(found.attachment_id)
    except (ValueError, KeyError, TypeError) as exc:
        raise AttachmentError("not_attachment", f"malformed attachment reference: {exc}") from exc
    if len(found.key) != KEY_BYTES or len(found.attachment_id) != 2 * ID_BYTES or found.size < 0 or len(found.sha256) != 64:
        raise AttachmentError("not_attachment", "malformed attachment reference (id, key, size or digest)")
    return found


def _state(reply: attachments_pb2.BeginUploadResponse | attachments_pb2.UploadChunkResponse) -> attachments_pb2.UploadState:
    return reply.state


class Attachments:
    def __init__(self, state: LocalState, transport: Transport, tokens: Tokens) -> None:
        self._state = state
        self._transport = transport
        self._tokens = tokens

    # -- upload ------------------------------------------------------------------

    async def upload(
        self, source: str | Path | BinaryIO, *, content_type: str, name: str | None, progress: Progress | None
    ) -> tuple[Attachment, str | None]:
        """Uploads ``source``; returns the attachment and the state key of its pending record (if any)."""
        if isinstance(source, (str, Path)):
            path = Path(source)
            with path.open("rb") as file:
                return await self._upload_file(file, _pending_key(path), content_type, name or path.name, progress)
        return await self._upload_file(source, None, content_type, name, progress)

    async def _upload_file(
        self, file: BinaryIO, pending: str | None, content_type: str, name: str | None, progress: Progress | None
    ) -> tuple[Attachment, str | None]:
        size = file.seek(0, os.SEEK_END)
        remembered = self._state.get_meta(pending) if pending else None
        if remembered is not None:
            saved = json.loads(remembered)
            attachment = Attachment(saved["id"], size, saved["sha256"], content_type, name, base64.b64decode(saved["key"]))
        else:
            file.seek(0)
            digest = hashlib.sha256()
            while block := file.read(PLAIN_CHUNK * 16):
                digest.update(block)
            attachment = Attachment(secrets.token_hex(ID_BYTES), size, digest.hexdigest(), content_type, name,
                                    secrets.token_bytes(KEY_BYTES))
            if pending:
                self._state.set_meta(pending, json.dumps(
                    {"id": attachment.attachment_id, "sha256": attachment.sha256,
                     "key": base64.b64encode(attachment.key).decode()}).encode())
        reader = CiphertextReader(file, attachment.key, size)
        await self._resuming(lambda: self._push(attachment, reader, progress), what="upload")
        return attachment, pending

    def forget_pending(self, pending: str | None) -> None:
        if pending:
            self._state.delete_meta(pending)

    async def _push(self, attachment: Attachment, reader: CiphertextReader, progress: Progress | None) -> None:
        """One attempt: ask where the upload stands, then send the chunks from there."""
        ident = bytes.fromhex(attachment.attachment_id)
        request = attachments_pb2.BeginUploadRequest(attachment_id=ident, size=reader.size)
        state = _state(await self._tokens.authed(
            lambda ch, t, md: attachments_pb2_grpc.AttachmentsStub(ch).BeginUpload(request, timeout=t, metadata=md),
            service="relay",
        ))
        if state.committed:
            log.info("attachment %s…: resuming upload at byte %d of %d", attachment.attachment_id[:8], state.committed, reader.size)
        while not state.complete:
            index = state.committed // state.chunk_bytes
            start = index * state.chunk_bytes
            chunk = attachments_pb2.UploadChunkRequest(
                attachment_id=ident, index=index, data=reader.read_at(start, min(state.chunk_bytes, reader.size - start))
            )
            state = _state(await self._tokens.authed(
                lambda ch, t, md: attachments_pb2_grpc.AttachmentsStub(ch).UploadChunk(chunk, timeout=t, metadata=md),
                service="relay",
            ))
            if progress is not None:
                progress(state.committed, reader.size)

    async def _resuming(self, attempt: Callable[[], object], *, what: str) -> None:
        """Runs ``attempt`` again (it resumes) after outages and out-of-order answers, within RESUME_BUDGET_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESUME_BUDGET_S
        while True:
            try:
                await attempt()  # type: ignore[misc]
                return
            except (ServiceUnavailable, RequestRejected) as exc:
                if isinstance(exc, RequestRejected) and exc.code not in ("FAILED_PRECONDITION", "UNAVAILABLE", "DEADLINE_EXCEEDED"):
                    raise
                if loop.time() + RESUME_PAUSE_S > deadline:
                    raise
                log.info("attachment %s interrupted (%s); resuming", what, exc)
                await asyncio.sleep(RESUME_PAUSE_S)

    # -- delete ------------------------------------------------------------------

    async def delete(self, attachment_id: str) -> int:
        """Deletes an attachment this account uploaded; the ciphertext bytes the store dropped.

        ``AttachmentError``: "not_owner" (another account uploaded it: nothing changed),
        "gone" (unknown or expired). Deleting twice answers 0 the second time.
        """
        try:
            ident = bytes.fromhex(attachment_id)
        except ValueError:
            ident = b""
        if len(ident) != ID_BYTES:
            raise AttachmentError("not_attachment", f"an attachment id is {2 * ID_BYTES} hex digits")
        request = attachments_pb2.DeleteAttachmentRequest(attachment_id=ident)
        try:
            reply = await self._tokens.authed(
                lambda ch, t, md: attachments_pb2_grpc.AttachmentsStub(ch).DeleteAttachment(request, timeout=t, metadata=md),
                service="relay",
            )
        except RequestRejected as exc:
            if exc.code == "PERMISSION_DENIED":
                raise AttachmentError("not_owner", exc.message) from exc
            if exc.code == "NOT_FOUND":
                raise AttachmentError("gone", exc.message) from exc
            raise
        return int(reply.deleted_bytes)

    # -- download ----------------------------------------------------------------

    async def download(self, attachment: Attachment, dest: Path, progress: Progress | None) -> Path:
        part = dest.with_name(dest.name + PART_SUFFIX)
        count = chunk_count(attachment.size)
        # Resume after the whole verified chunks already on disk (the last one is always fetched again).
        have = part.stat().st_size if part.exists() else 0
        first = min(have // PLAIN_CHUNK, count - 1)
        digest = hashlib.sha256()
        with part.open("r+b" if part.exists() else "w+b") as out:
            out.truncate(first * PLAIN_CHUNK)
            out.seek(0)
            while block := out.read(PLAIN_CHUNK * 16):
                digest.update(block)
            writer = PlaintextWriter(attachment.key, attachment.size, first)
            if first:
                log.info("attachment %s…: resuming download at chunk %d of %d", attachment.attachment_id[:8], first, count)
            try:
                await self._resuming(lambda: self._pull(attachment, writer, out, digest, progress), what="download")
            except AttachmentError:
                out.close()
                part.unlink(missing_ok=True)
                raise
            out.flush()
            os.fsync(out.fileno())
        if part.stat().st_size != attachment.size or digest.hexdigest() != attachment.sha256:
            part.unlink(missing_ok=True)
            raise AttachmentError("digest", "the downloaded file's SHA-256 is not the one its message carried")
        part.replace(dest)
        return dest

    async def _pull(
        self, attachment: Attachment, writer: PlaintextWriter, out: BinaryIO, digest: hashlib._Hash, progress: Progress | None
    ) -> None:
        """One attempt: stream from where the verified plaintext ends, failing over on an outage."""
        total = ciphertext_size(attachment.size)
        token = await self._tokens.token()
        target = self._transport.endpoint
        stub = attachments_pb2_grpc.AttachmentsStub(self._transport.channel("relay"))
        request = attachments_pb2.DownloadRequest(attachment_id=bytes.fromhex(attachment.attachment_id), offset=writer.offset)
        call = stub.Download(request, metadata=metadata(token))
        try:
            async for reply in call:
                if reply.size != total:
                    raise AttachmentError("size", f"the server holds {reply.size} bytes, the message promised {total}")
                if reply.offset != writer.offset:
                    raise AttachmentError("truncated", f"the server skipped to byte {reply.offset} from {writer.offset}")
                for plaintext in writer.feed(reply.data):
                    out.write(plaintext)
                    digest.update(plaintext)
                if progress is not None:
                    progress(writer.offset, total)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                self._tokens.invalidate()
                raise ServiceUnavailable("token refused; logging in again") from exc
            if exc.code() in RETRYABLE:
                self._transport.fail_over(target, f"{exc.code().name}: {exc.details()}")
                raise ServiceUnavailable(f"download interrupted: {exc.details()}") from exc
            raise rejected(exc) from exc
        finally:
            call.cancel()
        if not writer.done:
            raise AttachmentError("truncated", f"the server ended at byte {writer.offset} of {total}")


def _pending_key(path: Path) -> str:
    """Names a pending upload by the file's path, size and modification time: a changed file starts over."""
    with contextlib.suppress(OSError):
        stat = path.stat()
        return _PENDING + hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    return _PENDING + hashlib.sha256(str(path).encode()).hexdigest()[:32]
