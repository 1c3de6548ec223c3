"""When relay hedges a publish (ADR 0013), in memory: a leaderless mailbox stream hedges after
``HEDGE_AFTER_S``; a slow one that still acknowledges other publishes does not (hedging every slow
publish would double an overloaded store's writes and leave a copy in each stream)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import nats.errors
import nats.js.errors

from xchat.core.ids import DeviceId, MessageId
from xchat.relay import sending
from xchat.relay.sending import Relay

RECIPIENT = DeviceId("dev-bob")
MESSAGE = MessageId(b"m" * 16)


def _relay() -> Relay:
    js = SimpleNamespace(_handle_async_reply=None)
    return Relay(SimpleNamespace(settings=None, js=js), None, max_ciphertext_bytes=1024)  # type: ignore[arg-type]


class Stream:
    """A publish that answers after ``delays`` (one per attempt; None: never)."""

    def __init__(self, *delays: float | None) -> None:
        self.delays = list(delays)
        self.attempts = 0

    async def __call__(self, wait: float) -> SimpleNamespace:
        delay = self.delays[min(self.attempts, len(self.delays) - 1)]
        self.attempts += 1
        if delay is None or delay > wait:
            await asyncio.sleep(wait)
            raise nats.errors.TimeoutError
        await asyncio.sleep(delay)
        return SimpleNamespace(seq=self.attempts, duplicate=self.attempts > 1)


async def test_a_silent_mailbox_stream_hedges() -> None:
    relay, primary, hedge = _relay(), Stream(None), Stream(0.0)
    receipt = await relay._stored(RECIPIENT, MESSAGE, primary, hedge, timeout=2.0)
    assert receipt.hedged and primary.attempts == 1 and hedge.attempts == 1


async def test_a_slow_mailbox_stream_that_acknowledges_others_is_waited_for() -> None:
    """An overloaded store: many publishes in flight, each slow, acknowledgements still arriving."""
    relay = _relay()
    slow, hedge = Stream(sending.HEDGE_AFTER_S + 0.1, 0.0), Stream(0.0)
    others = Stream(sending.HEDGE_AFTER_S * 0.6)  # another recipient's publish, acknowledged meanwhile
    receipt, _ = await asyncio.gather(
        relay._stored(RECIPIENT, MESSAGE, slow, hedge, timeout=2.0),
        relay._stored(DeviceId("dev-carol"), MESSAGE, others, Stream(0.0), timeout=2.0),
    )
    assert not receipt.hedged and slow.attempts == 2 and hedge.attempts == 0


async def test_a_publish_stuck_on_its_id_while_others_are_acknowledged_hedges() -> None:
    """After a region kill under load, a resent envelope whose first copy went through the
    killed relay got no answer from the new leader for ~10 s while other publishes were
    acknowledged: "slow, not leaderless" retried it until the killed region came back (and
    the recipient's order buffer held every later envelope of that sender meanwhile)."""
    relay = _relay()
    stuck, hedge = Stream(None), Stream(0.0)
    done = asyncio.Event()

    async def others_acknowledged() -> None:
        while not done.is_set():  # other recipients' publishes keep succeeding
            await relay._stored(DeviceId("dev-carol"), MESSAGE, Stream(0.01), Stream(0.0), timeout=2.0)

    background = asyncio.create_task(others_acknowledged())
    started = asyncio.get_running_loop().time()
    try:
        receipt = await relay._stored(RECIPIENT, MESSAGE, stuck, hedge, timeout=5.0)
    finally:
        done.set()
        await background
    took = asyncio.get_running_loop().time() - started
    assert receipt.hedged and hedge.attempts == 1, receipt
    assert took < 1.0 + 2 * sending.HEDGE_AFTER_S + 0.3, took  # STUCK_AFTER_S (1 s) and one more try


async def test_an_outage_that_starts_during_a_slow_publish_still_hedges() -> None:
    relay = _relay()
    await relay._stored(RECIPIENT, MESSAGE, Stream(0.0), Stream(0.0), timeout=2.0)
    dead, hedge = Stream(None), Stream(0.0)
    started = asyncio.get_running_loop().time()
    receipt = await relay._stored(RECIPIENT, MESSAGE, dead, hedge, timeout=2.0)
    took = asyncio.get_running_loop().time() - started
    assert receipt.hedged and took < 3 * sending.HEDGE_AFTER_S + 0.2, took


class Js:
    """The hedge stream: records what was written, in order."""

    def __init__(self) -> None:
        self._handle_async_reply = None
        self.written: list[bytes] = []

    async def publish(self, subject: str, data: bytes, **_: object) -> SimpleNamespace:
        await asyncio.sleep(0.01)  # a quorum write takes a moment
        self.written.append(data)
        return SimpleNamespace(seq=len(self.written), duplicate=False)


async def test_hedged_writes_of_one_recipient_follow_their_stamps() -> None:
    """Envelope 1's mailbox-stream publish times out (0.25 s), envelope 2's fails at once (no
    responders): 2 must not reach the hedge stream first, or the recipient reads it first
    (a load drill saw seq 48 delivered after 50 right after a kill)."""
    js = Js()
    relay = Relay(SimpleNamespace(settings=SimpleNamespace(mailbox_ttl_s=0), js=js), None, max_ciphertext_bytes=1024)  # type: ignore[arg-type]
    first, first_headers = relay._message(RECIPIENT, MessageId(b"1" * 16), b"one")
    first_stamp = relay._last_stamp
    second, second_headers = relay._message(RECIPIENT, MessageId(b"2" * 16), b"two")
    second_stamp = relay._last_stamp

    async def no_responders(wait: float) -> SimpleNamespace:
        raise nats.errors.NoRespondersError

    async def store(message: MessageId, primary: object, stamp: int, data: bytes, headers: dict[str, str]) -> None:
        try:
            await relay._stored(RECIPIENT, message, primary, relay._hedge(RECIPIENT, stamp, data, headers), timeout=2.0)  # type: ignore[arg-type]
        finally:
            relay._settled(RECIPIENT, stamp)

    await asyncio.gather(
        store(MessageId(b"1" * 16), Stream(None), first_stamp, first, first_headers),
        store(MessageId(b"2" * 16), no_responders, second_stamp, second, second_headers),
    )
    assert js.written == [first, second]
    assert relay._unsettled == {}


class StallingJs(Js):
    """A connection whose first publish stalls (a loaded machine) before it is handed over;
    ``written`` holds what reached either stream, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stalls = 1

    async def publish_async(self, subject: str, data: bytes, **_: object) -> asyncio.Future[SimpleNamespace]:
        if self.stalls:
            self.stalls -= 1
            await asyncio.sleep(10)  # cancelled by the publish's deadline: never handed over
        self.written.append(data)
        future: asyncio.Future[SimpleNamespace] = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(seq=len(self.written), duplicate=False))
        return future


async def test_a_publish_that_stalled_before_the_connection_keeps_its_turn() -> None:
    """Envelope 1's publish stalls past the hedge deadline before it is even written (and is then
    hedged); envelope 2 must not reach the mailbox stream first (a load drill delivered seq 59
    after 60 and 61, before any fault)."""
    js = StallingJs()

    async def wake_up(*_: object) -> None:
        return None

    store = SimpleNamespace(settings=SimpleNamespace(mailbox_ttl_s=0), js=js, nc=SimpleNamespace(publish=wake_up))
    relay = Relay(store, None, max_ciphertext_bytes=1024)  # type: ignore[arg-type]

    async def valid(*_: object) -> None:
        return None

    relay.validate = valid  # type: ignore[method-assign]
    first, second = await asyncio.gather(
        relay.send_pipelined(None, RECIPIENT, MessageId(b"1" * 16), b"one", timeout=2.0),
        relay.send_pipelined(None, RECIPIENT, MessageId(b"2" * 16), b"two", timeout=2.0),
    )
    assert first.hedged and not second.hedged
    assert len(js.written) == 2 and b"one" in js.written[0] and b"two" in js.written[1], js.written


class InProcess:
    """A mailbox stream that answers "duplicate message id is in process" (10158) to every publish."""

    def __init__(self) -> None:
        self.attempts = 0

    async def __call__(self, wait: float) -> SimpleNamespace:
        self.attempts += 1
        await asyncio.sleep(0.001)
        raise nats.js.errors.APIError(code=400, err_code=sending.DUPLICATE_IN_PROCESS, description="duplicate message id is in process")


async def test_an_id_that_stays_in_process_is_hedged_after_the_hedge_delay() -> None:
    """The proposal it names died with its leader: waiting for it held envelopes for 10 s while later ones were stored."""
    relay, primary, hedge = _relay(), InProcess(), Stream(0.0)
    started = asyncio.get_running_loop().time()
    receipt = await relay._stored(RECIPIENT, MESSAGE, primary, hedge, timeout=5.0)
    took = asyncio.get_running_loop().time() - started
    assert receipt.hedged and hedge.attempts == 1 and primary.attempts > 1
    assert sending.HEDGE_AFTER_S <= took < sending.HEDGE_AFTER_S + 1.0, took


async def test_an_id_in_process_briefly_is_answered_by_the_mailbox_stream() -> None:
    """The usual case (a resend while the original replicates): retried, never hedged."""

    class Briefly(InProcess):
        async def __call__(self, wait: float) -> SimpleNamespace:
            if self.attempts < 2:
                return await super().__call__(wait)
            self.attempts += 1
            return SimpleNamespace(seq=7, duplicate=True)

    relay, primary, hedge = _relay(), Briefly(), Stream(0.0)
    receipt = await relay._stored(RECIPIENT, MESSAGE, primary, hedge, timeout=5.0)
    assert not receipt.hedged and receipt.duplicate and hedge.attempts == 0
