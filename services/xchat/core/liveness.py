"""Is this region cut off from the others? Heard in about a second, from beats on core NATS.

A partitioned region's services keep answering, but its store has no quorum and
no wake-up from the other regions' relays reaches it, so an open Sync call there
is silent. The health checks alone find that out slowly: a JetStream request
waits its whole timeout, and one failed check cannot be told from a meta election
in a healthy mesh (the store's ``CUT_OFF_AFTER_S`` is 15 s for that reason, ADR 0019).

So every mailbox process says "region R is alive" on ``xchat.alive`` (core NATS,
never stored) every ``BEAT_S``, and listens to everyone's beats, its own
included. Core NATS crosses the same routes as the store's replication: when
the routes to every other region are cut, their beats stop at once. Isolation
is then: the last beat heard from another region is ``SILENT_AFTER_S`` older
than the last one heard from our own region. Comparing arrivals with arrivals
(not with the clock) keeps a process whose own loop stalled from blaming the
others: its buffered beats are read in the order they came.

Silence alone is not enough (the other regions' mailbox processes could all be
slow at once), so an isolated process makes one replicated write, with a short
deadline (``PROBE_TIMEOUT_S``): a purge of a subject no device uses, which
removes nothing but must be committed by a quorum. A read would not do: a
region cut off while it held the meta leader keeps answering reads as leader
until Raft notices it lost its quorum (16 s measured), and meanwhile the other
regions' clients, whose own regions are electing, were moved *into* it. Only
when the write fails too is the store marked cut off (``Store.mark_cut_off``):
the Sync calls here end and new ones are refused, so the SDK moves them, and
health says NOT_SERVING, so no client comes home to it. It stays cut off while
the silence lasts, even if a stale leader answers the health check. A process
that never heard another region (a one-region mesh) never counts as isolated. Cost: one ~10-byte message per mailbox process every ``BEAT_S``,
delivered to every mailbox process (6 processes: 24 messages/s published).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets

import nats.errors
from nats.aio.msg import Msg

from xchat.core.permissions import ALIVE_SUBJECT, MAILBOX_STREAM
from xchat.core.store import Store

log = logging.getLogger(__name__)

BEAT_S = 0.25
# Four beats in a row from every other region missing (one lost beat is normal under load).
SILENT_AFTER_S = 1.0
# A replicated write that a reachable quorum commits in milliseconds; a partitioned one never.
PROBE_TIMEOUT_S = 0.5
PROBE_SUBJECT = f"$JS.API.STREAM.PURGE.{MAILBOX_STREAM}"
# Not a device's subject (those are hex ids): the purge removes nothing.
PROBE_BODY = json.dumps({"filter": "xchat.mbx.liveness-probe"}).encode()


class RegionLiveness:
    """Beats for ``region`` and tells ``store`` when the other regions fell silent and it cannot store."""

    def __init__(self, store: Store, region: str) -> None:
        self._store = store
        self._region = region
        self._process = secrets.token_hex(4)
        # Loop time of arrival of the latest beat from our region (any process) and from any other.
        self._own_heard: float | None = None
        self._others_heard: float | None = None
        self._beater: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._store.isolation = lambda: self.isolated
        await self._store.nc.subscribe(ALIVE_SUBJECT, cb=self._on_beat)
        self._beater = asyncio.create_task(self._beat_forever())

    async def stop(self) -> None:
        for task in (self._beater, self._probe):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @property
    def isolated(self) -> bool:
        """True when our own region's beats keep arriving but no other region's has for ``SILENT_AFTER_S``."""
        if self._own_heard is None or self._others_heard is None:
            return False
        return self._own_heard - self._others_heard >= SILENT_AFTER_S

    async def _beat_forever(self) -> None:
        beat = f"{self._region} {self._process}".encode()
        while True:
            with contextlib.suppress(nats.errors.Error):
                await self._store.nc.publish(ALIVE_SUBJECT, beat)
            await asyncio.sleep(BEAT_S)

    async def _on_beat(self, msg: Msg) -> None:
        region, _, _ = msg.data.decode("ascii", "replace").partition(" ")
        if not region:
            return
        now = asyncio.get_running_loop().time()
        if region != self._region:
            self._others_heard = now
            return
        self._own_heard = now
        if self.isolated and not self._store.cut_off and (self._probe is None or self._probe.done()):
            self._probe = asyncio.create_task(self._confirm())

    async def _confirm(self) -> None:
        silent_for = (self._own_heard or 0.0) - (self._others_heard or 0.0)
        if await self._quorum_writes():
            return
        if self.isolated and not self._store.cut_off:
            log.warning(
                "region %s: no other region heard for %.1f s and the store does not answer: cut off",
                self._region, silent_for,
            )
            self._store.mark_cut_off()

    async def _quorum_writes(self) -> bool:
        try:
            reply = await self._store.nc.request(PROBE_SUBJECT, PROBE_BODY, timeout=PROBE_TIMEOUT_S)
        except (nats.errors.Error, asyncio.TimeoutError):
            return False
        try:
            return "error" not in json.loads(reply.data or b"{}")
        except ValueError:
            return False
