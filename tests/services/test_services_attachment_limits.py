"""Attachment byte limits in memory: uploads are refused over the rate, downloads are paced."""

from __future__ import annotations

import asyncio
import time

import pytest

from xchat.core.errors import ResourceExhausted
from xchat.core.ratelimit import Rate, RateLimiter
from xchat.relay.attachments_service import AttachmentsServicer

CHUNK = 256 * 1024


async def test_a_download_over_the_byte_rate_is_paced_not_refused() -> None:
    servicer = AttachmentsServicer(None, download_bytes=RateLimiter(Rate(per_second=2 * CHUNK, burst=CHUNK), what="bytes"))  # type: ignore[arg-type]
    started = time.monotonic()
    await servicer._pace("device", CHUNK)  # the burst: at once
    assert time.monotonic() - started < 0.2
    await asyncio.wait_for(servicer._pace("device", CHUNK), 5)  # refills in ~0.5 s
    assert time.monotonic() - started >= 0.4
    await servicer._pace("another-device", CHUNK)  # per device
    assert time.monotonic() - started < 1.5


def test_uploaded_bytes_over_the_rate_are_resource_exhausted_with_a_hint() -> None:
    servicer = AttachmentsServicer(None, upload_bytes=RateLimiter(Rate(per_second=CHUNK, burst=CHUNK), what="attachment bytes"))  # type: ignore[arg-type]
    servicer.upload_bytes.take("device", CHUNK)
    with pytest.raises(ResourceExhausted) as refused:
        servicer.upload_bytes.take("device", CHUNK)
    assert refused.value.retry_after_ms is not None and refused.value.retry_after_ms > 0
