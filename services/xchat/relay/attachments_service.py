"""gRPC servicer for attachments (hosted by the relay process): upload in chunks, download a stream.

The edge (``xchat.core.edge``) authenticates every call; BeginUpload and
Download are limited per device as calls, UploadChunk here per device in
bytes (``UPLOAD_RATE``), since its cost is its size, and a download's stream
is paced per device in bytes (``DOWNLOAD_RATE``). Storage, ownership and
quota live in ``xchat.relay.attachments``; this module only converts
protobuf and streams. A download holds at most two chunks in memory (the
one being written and the next being read).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from xchat.core.authz import require_principal
from xchat.core.errors import InvalidArgument
from xchat.core.ratelimit import Rate, RateLimiter
from xchat.core.rpc import streaming, unary
from xchat.relay.attachments import Attachments, UploadState, attachment_id, chunk_count
from xchat.v1 import attachments_pb2, attachments_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]
# Uploaded ciphertext per device per process: bytes per second and burst. A
# 100 MiB file goes up in ~2 s at the rate; a runaway loop cannot fill the store faster.
UPLOAD_RATE = Rate(per_second=64 * 1024**2, burst=256 * 1024**2)
# Downloaded ciphertext per device per process: a device over it is paced (its
# stream waits), not refused, so a large download slows down instead of failing.
DOWNLOAD_RATE = Rate(per_second=128 * 1024**2, burst=256 * 1024**2)
PACE_STEP_S = 0.05


def _state(state: UploadState) -> attachments_pb2.UploadState:
    return attachments_pb2.UploadState(
        attachment_id=bytes.fromhex(state.attachment),
        size=state.size,
        chunk_bytes=state.chunk_bytes,
        committed=state.committed,
        complete=state.complete,
        expires_at_ms=state.expires_ms,
    )


class AttachmentsServicer(attachments_pb2_grpc.AttachmentsServicer):
    def __init__(
        self, attachments: Attachments, *, upload_bytes: RateLimiter | None = None, download_bytes: RateLimiter | None = None
    ) -> None:
        self._attachments = attachments
        self.upload_bytes = upload_bytes or RateLimiter(UPLOAD_RATE, what="attachment bytes", per="device")
        self.download_bytes = download_bytes or RateLimiter(DOWNLOAD_RATE, what="downloaded attachment bytes", per="device")

    async def _pace(self, device: str, size: int) -> None:
        """Waits until ``device`` may receive ``size`` more bytes (a chunk is never above the burst)."""
        while not self.download_bytes.try_take(device, max(1, size)):
            await asyncio.sleep(PACE_STEP_S)

    @unary
    async def BeginUpload(self, request: attachments_pb2.BeginUploadRequest, context: Ctx) -> attachments_pb2.BeginUploadResponse:
        caller = require_principal()
        state = await self._attachments.begin(caller.account, attachment_id(request.attachment_id), request.size)
        return attachments_pb2.BeginUploadResponse(state=_state(state))

    @unary
    async def UploadChunk(self, request: attachments_pb2.UploadChunkRequest, context: Ctx) -> attachments_pb2.UploadChunkResponse:
        caller = require_principal()
        attachment = attachment_id(request.attachment_id)
        self.upload_bytes.take(caller.device, max(1, len(request.data)))
        state = await self._attachments.append(caller.account, attachment, request.index, request.data)
        return attachments_pb2.UploadChunkResponse(state=_state(state))

    @unary
    async def DeleteAttachment(
        self, request: attachments_pb2.DeleteAttachmentRequest, context: Ctx
    ) -> attachments_pb2.DeleteAttachmentResponse:
        caller = require_principal()  # only the account that claimed it (checked against the claim)
        dropped = await self._attachments.delete(caller.account, attachment_id(request.attachment_id))
        return attachments_pb2.DeleteAttachmentResponse(deleted_bytes=dropped)

    @streaming
    async def Download(self, request: attachments_pb2.DownloadRequest, context: Ctx) -> AsyncIterator[attachments_pb2.DownloadResponse]:
        caller = require_principal()  # any device that holds the id (a capability) may read the ciphertext
        attachment = attachment_id(request.attachment_id)
        claim = await self._attachments.size_for_download(attachment)
        if request.offset > claim.size:
            raise InvalidArgument(f"offset {request.offset} is past the attachment's end ({claim.size} bytes)")
        first = request.offset // claim.chunk_bytes
        count = chunk_count(claim.size)
        if request.offset == claim.size:
            return
        ahead: asyncio.Task[bytes] | None = asyncio.create_task(self._attachments.chunk(attachment, claim, first))
        try:
            for index in range(first, count):
                assert ahead is not None
                data = await ahead
                # Read the next chunk while this one is being written to the client.
                ahead = asyncio.create_task(self._attachments.chunk(attachment, claim, index + 1)) if index + 1 < count else None
                start = index * claim.chunk_bytes
                skip = max(0, request.offset - start)
                await self._pace(caller.device, len(data) - skip)
                # Never past the claimed size, whatever the stored chunk holds.
                yield attachments_pb2.DownloadResponse(offset=start + skip, data=data[skip:claim.size - start], size=claim.size)
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
