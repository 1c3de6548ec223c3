"""Envelopes on the wire: how the send path cuts its queue into SendStream batches,
builds requests, and reads the statuses it gets back."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import grpc.aio

from xchat.client._state import OutboxItem
from xchat.v1 import relay_pb2

# Envelopes per SendStream message: amortises gRPC's per-message cost (relay accepts ≤ 256).
SEND_BATCH = 128
# Bytes of ciphertext per SendStream message: relay accepts messages up to 1 MiB
# (core/server.py MAX_RECEIVE_BYTES); 64 envelopes of 16 KiB already exceed it, and
# a refused batch would fail every envelope in it. One envelope (≤ 128 KiB) always fits.
SEND_BATCH_BYTES = 768 * 1024
# Protobuf framing and ids per envelope, counted against SEND_BATCH_BYTES.
ENVELOPE_OVERHEAD_BYTES = 128
# Streams in a row whose status grpc.aio lost (status_lost) before their envelopes are refused.
LOST_STATUS_RETRIES = 3


def chunks(items: list[OutboxItem], max_count: int, max_bytes: int) -> Iterator[list[OutboxItem]]:
    """Consecutive runs of ``items`` (order kept) of at most ``max_count`` items and ``max_bytes`` bytes."""
    chunk: list[OutboxItem] = []
    size = 0
    for item in items:
        cost = len(item.ciphertext) + ENVELOPE_OVERHEAD_BYTES
        if chunk and (len(chunk) >= max_count or size + cost > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += cost
    if chunk:
        yield chunk


def status_lost(exc: grpc.aio.AioRpcError) -> bool:
    """grpc.aio's own INTERNAL for a write that failed because the server had ended the call."""
    return exc.code() == grpc.StatusCode.INTERNAL and "Internal error from Core" in (exc.details() or "")


def request(item: OutboxItem) -> relay_pb2.SendRequest:
    return relay_pb2.SendRequest(
        recipient_device_id=item.recipient_device, message_id=item.message_id, ciphertext=item.ciphertext,
        ttl_seconds=item.ttl_s,
    )


def code_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)
