"""Push wake-ups in memory: an unreachable gateway never slows the wake-up path, and overflow is counted.

The mesh test (tests/client/test_client_push.py) covers delivery; here the
gateway and the online view are injected so the queue bound can be reached.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from xchat.core import metrics
from xchat.core.ids import DeviceId
from xchat.mailbox.push import Pushes, check_token
from xchat.mailbox.webhook import PushFailed, WebhookSender, wake_body


class Entry:
    value = b"token-1"


class Bucket:
    async def get(self, key: str) -> Entry:
        return Entry()


class View:
    warm = True

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def online_elsewhere(self, device: DeviceId) -> bool:
        return False

    def owner(self, device: DeviceId) -> bool:
        return True


class Stalled:
    """A gateway that never answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, token: str) -> None:
        self.calls += 1
        await asyncio.Event().wait()


def _count(outcome: str) -> float:
    return float(metrics.PUSHES.labels(outcome)._value.get())


async def test_a_stalled_gateway_fills_the_queue_then_wakeups_are_dropped_and_counted() -> None:
    sender = Stalled()
    pushes = Pushes(Bucket(), View(), sender, coalesce_s=30.0, queue_max=8)  # type: ignore[arg-type]
    await pushes.start()
    try:
        dropped = _count("dropped")
        coalesced = _count("coalesced")
        await asyncio.sleep(0)
        started = time.perf_counter()
        for i in range(2000):
            pushes.stored(DeviceId(f"{i:032x}"))
        took = time.perf_counter() - started
        await asyncio.sleep(0.05)
        # The worker holds one, the queue 8: every other device's wake-up is dropped, at once.
        assert sender.calls == 1
        assert _count("dropped") - dropped >= 2000 - 9 - 1
        assert took < 0.5, took
        # The same device again within the window: coalesced, not queued.
        pushes.stored(DeviceId(f"{0:032x}"))
        assert _count("coalesced") - coalesced == 1
    finally:
        await pushes.stop()


async def test_an_unreachable_webhook_fails_within_its_bounds() -> None:
    # Nothing listens on port 9 of this host (discard): connection refused, retried twice, then PushFailed.
    sender = WebhookSender("http://127.0.0.1:9/wake", timeout_s=0.5, retry_pauses_s=(0.05, 0.05))
    started = time.monotonic()
    try:
        await sender.send("t")
    except PushFailed as exc:
        assert "127.0.0.1:9" in str(exc)
    else:
        raise AssertionError("no gateway, yet the push succeeded")
    assert time.monotonic() - started < 2.0


def test_the_wake_body_and_token_rules() -> None:
    assert wake_body("abc") == b'{"token":"abc","wake":true}'
    assert check_token(b"") == ""
    for bad in (b"a b", b"\x00", bytes(513)):
        try:
            check_token(bad)
        except Exception as exc:  # noqa: BLE001
            assert type(exc).__name__ == "InvalidArgument"
        else:
            raise AssertionError(bad)
    try:
        WebhookSender("ftp://x/")
    except ValueError:
        pass
    else:
        raise AssertionError("ftp accepted")
