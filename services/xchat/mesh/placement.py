"""Keeps the hedge stream's leader out of the mailbox stream's leader's region (ADR 0013).

Relay writes to ``XCHAT_MAILBOX_HEDGE`` while ``XCHAT_MAILBOX`` has no leader
(its election takes 4-9 s). That only helps when the hedge stream's leader
survives the fault that took the mailbox stream's: a region holding both
leaders takes both streams into an election, and sends wait for it as before.
nats-server places leaders where its elections fall, so something must move
them apart again after every election, restart and roll: this keeper.

One pass (:func:`keep_once`): list the streams (``$JS.API.STREAM.LIST``:
leaders and followers, never a subject), and when both leaders share a region,
ask the hedge stream's leader to hand over to a *current* follower in another
region (``$JS.API.STREAM.LEADER.STEPDOWN`` with a placement, nats-server ≥
2.11: no election timeout, the new leader is in place within a heartbeat).
Only the hedge stream moves: it holds envelopes only during outages, so a
hand-over costs nothing noticeable, whereas moving the mailbox stream's leader
would pause every send for the hand-over. A pass that finds no leader (an
election under way) or no current follower elsewhere does nothing and the next
pass looks again.

Who runs it: anything with the ``jsadmin`` permissions
(:func:`xchat.core.permissions.jsadmin_permissions`: list, step down, no data)
and a map from server name to region, which NATS does not expose to a client.
``LocalMesh`` runs a :class:`KeeperThread` (``xchat up``, tests, drills); the
operator runs one pass per ``XCHAT_OPERATOR_PLACEMENT_SECONDS`` from its own
``jsadmin`` user (``xchat_operator.replicas``). A pass every
``KEEP_INTERVAL_S`` bounds the time both leaders share a region to about that
plus one hand-over (measured in ``tests/services/test_mesh_placement.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors

from xchat.core.permissions import HEDGE_STREAM, MAILBOX_STREAM
from xchat.mesh import jsadmin
from xchat.mesh.jsadmin import JetStreamAdminError, Placement

log = logging.getLogger(__name__)

# Seconds between passes (each one STREAM.LIST: the meta leader asks each stream's leader).
KEEP_INTERVAL_S = 2.0
# After a hand-over: the next pass checks sooner (the new leader shows within a heartbeat).
AFTER_MOVE_S = 1.0
# One pass may not take longer (a STREAM.LIST during an election waits for missing leaders).
PASS_TIMEOUT_S = 10.0

RegionOf = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Move:
    """The hedge stream's leader handed from ``from_region`` (shared with the mailbox stream's) to ``to_region``."""

    stream: str
    server: str
    from_region: str
    to_region: str


def plan(placements: Sequence[Placement], region_of: RegionOf, avoid: Collection[str] = ()) -> Move | None:
    """The hand-over one pass asks for, or None. Pure: tested without a server.

    None when either stream has no leader (an election: look again later), when
    the leaders' regions differ or are unknown, or when no follower of the
    hedge stream outside the shared region is current (a stepdown to a lagging
    replica would have to wait for it to catch up). Never towards a region of
    ``avoid`` (being rolled or drained: its own hand-over moves leaders away).
    """
    by_name = {p.stream: p for p in placements}
    mailbox, hedge = by_name.get(MAILBOX_STREAM), by_name.get(HEDGE_STREAM)
    if mailbox is None or hedge is None or not mailbox.leader or not hedge.leader:
        return None
    shared = region_of(mailbox.leader)
    if shared is None or region_of(hedge.leader) != shared:
        return None
    # Prefer a region that leads nothing else: a later loss of it then costs one election, not several.
    leading: dict[str, int] = {}
    for p in placements:
        if p.leader and (r := region_of(p.leader)) is not None:
            leading[r] = leading.get(r, 0) + 1
    candidates = sorted(
        {r for s in hedge.current if (r := region_of(s)) is not None and r != shared and r not in avoid},
        key=lambda r: (leading.get(r, 0), r),
    )
    if not candidates:
        return None
    return Move(stream=HEDGE_STREAM, server=hedge.leader, from_region=shared, to_region=candidates[0])


async def keep_once(nc: Any, region_of: RegionOf, avoid: Collection[str] = ()) -> Move | None:
    """One pass over an admin connection: lists, and hands the hedge leader over if needed."""
    move = plan(await jsadmin.placements(nc), region_of, avoid)
    if move is not None:
        await jsadmin.step_down_stream(nc, move.stream, prefer_region=move.to_region)
        log.info("hedge stream's leader %s shared region %s with the mailbox stream's: handed to region %s",
                 move.server, move.from_region, move.to_region)
    return move


class Keeper:
    """Passes every ``interval_s`` over one connection (made again when it breaks), until cancelled."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        region_of: RegionOf,
        *,
        avoid: Callable[[], Collection[str]] = tuple,
        interval_s: float = KEEP_INTERVAL_S,
    ) -> None:
        self._connect = connect
        self._region_of = region_of
        self._avoid = avoid
        self._interval = interval_s
        # (wall time, move) of every hand-over asked for, for tests and drills.
        self.moves: list[tuple[float, Move]] = []
        self.passes = 0

    async def run(self) -> None:
        nc: Any = None
        try:
            while True:
                move = None
                try:
                    if nc is None or nc.is_closed:
                        nc = await self._open()
                    move = await asyncio.wait_for(keep_once(nc, self._region_of, self._avoid()), PASS_TIMEOUT_S)
                    self.passes += 1
                    if move is not None:
                        self.moves.append((time.time(), move))
                except (nats.errors.Error, JetStreamAdminError, OSError, asyncio.TimeoutError) as exc:
                    # A region down, an election, a refused hand-over: the next pass looks again.
                    log.debug("placement pass: %s", exc or type(exc).__name__)
                except Exception:  # noqa: BLE001 - a malformed answer must not end the keeper
                    log.exception("placement pass failed")
                await asyncio.sleep(AFTER_MOVE_S if move is not None else self._interval)
        finally:
            if nc is not None and not nc.is_closed:
                with contextlib.suppress(Exception):
                    await nc.close()


    async def _open(self) -> Any:
        """A connection; cancelled while connecting, the half-made one is closed, not leaked."""
        connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                nc = await asyncio.wait_for(connecting, 5)
                await nc.close()
            raise


class KeeperThread:
    """A :class:`Keeper` on its own event loop and thread (``LocalMesh``: its owner may be synchronous)."""

    def __init__(self, keeper: Keeper) -> None:
        self.keeper = keeper
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name="xchat-placement-keeper", daemon=True)
        self._thread.start()
        self._started.wait(5)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self.keeper.run())
            self._started.set()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
        finally:
            # Whatever the NATS client left running (readers, pingers) ends here, so its
            # transports close with this loop rather than warn at garbage collection.
            leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in leftover:
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self, timeout: float = 5.0) -> None:
        thread, loop, task = self._thread, self._loop, self._task
        if thread is None:
            return
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout)
        self._thread = None
