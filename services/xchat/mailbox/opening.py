"""The acks a client carries over to a new Sync call: settled before its first answer when
the store allows it quickly, else in the background.

Removing them needs the stream's leader. Just after a region was lost there may be
none for seconds (an election), and the SDK gives a call 1 s for its first answer: a
client moving off a lost region was turned away by both healthy regions in turn (a
user of a partitioned region waited 7 s; ADR 0019 addendum). Delivering first is
safe: what is not removed yet may be handed over again, and the SDK drops a copy it
has by its message id and acknowledges it again.
"""

from __future__ import annotations

import asyncio
import logging

from xchat.mailbox.hedge import DeviceStreams

log = logging.getLogger(__name__)

# How long an opening call waits for its carried-over acks: well inside the SDK's 1 s.
OPEN_SETTLE_S = 0.3


class CarriedAcks:
    """Settles opening calls' carried-over acks; keeps those still running after the call answered."""

    def __init__(self) -> None:
        self._background: set[asyncio.Future[None]] = set()

    async def settle(self, window: DeviceStreams, sequences: list[int]) -> None:
        if not sequences:
            return  # the usual opening: no task, no yield
        settling = asyncio.ensure_future(window.settle(sequences))
        done, _ = await asyncio.wait({settling}, timeout=OPEN_SETTLE_S)
        if done:
            settling.result()  # a bad request (too many sequences) is refused here
            return
        self._background.add(settling)
        settling.add_done_callback(self._background.discard)
        settling.add_done_callback(_log_failure)


def _log_failure(settled: asyncio.Future[None]) -> None:
    if not settled.cancelled() and settled.exception() is not None:
        log.warning("acknowledgements carried over by a new call not settled: %r", settled.exception())
