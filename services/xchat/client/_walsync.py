"""Group fsync of the state's WAL, off the event loop: one disk flush for every commit made before it.

A durable commit (``synchronous=FULL``) flushes the WAL inside ``COMMIT``, on
the event loop: 1–3 ms on this machine's disk during which the app's loop does
nothing else, once per commit. With sends arriving spread out (an open loop at
a few hundred msg/s) every send was its own commit, and the sending app spent
two thirds of its time in ``COMMIT`` (docs/perf/flames/open_half_peak-*.svg).

Instead the hot paths commit with ``synchronous=NORMAL`` (SQLite writes the
WAL frames to the OS at ``COMMIT``; only the flush is skipped) and then
``await WalSync.sync()``: one ``fdatasync`` of the WAL file, run in a worker
thread, which every commit made before it started shares. While it runs the
loop keeps encrypting and committing; those commits share the next flush. What
a commit made durable is acted on (an envelope sent, a message handed to the
app) only after ``sync()`` returns, so a power loss can never roll back a
ratchet whose ciphertext left, the guarantee ``synchronous=FULL`` gave
(docs/adr/0007-sdk-send-path.md, addendum 2026-12-01).

Why the WAL file alone is enough: in WAL mode a transaction is durable once
its frames, commit frame included, are on disk in the ``-wal`` file (that is
all ``FULL`` adds: a sync of that file at commit). A checkpoint that moves the
frames into the database file syncs both files itself before it truncates the
WAL, so a flush that finds the WAL already truncated has nothing left to do.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


def _flush(wal: Path) -> None:
    # Opened per flush: no descriptor outlives the call or races ``close``.
    try:
        fd = os.open(wal, os.O_RDONLY)
    except FileNotFoundError:
        return  # no WAL: everything committed is in the database file, synced by its checkpoint
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


class WalSync:
    """``await sync()`` returns once every commit made before the call is on disk."""

    def __init__(self, database: Path | str) -> None:
        # ":memory:" and "" (temporary) databases have no file to flush.
        self._wal = Path(f"{database}-wal") if str(database) not in ("", ":memory:") else None
        # Callers waiting for the next flush (it starts after the one in flight ends).
        self._waiting: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def sync(self) -> None:
        if self._wal is None:
            return
        # A flush already running may have started before our commit: wait for the next one.
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().create_future()
        waiting = self._waiting
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all(), name="xchat.client.wal-sync")
        # Shielded: one caller's cancellation must not cancel the flush the others share.
        await asyncio.shield(waiting)

    async def _flush_all(self) -> None:
        assert self._wal is not None
        while self._waiting is not None:
            # Everything committed up to now is covered by this flush; later commits wait for the next.
            serving, self._waiting = self._waiting, None
            try:
                await asyncio.to_thread(_flush, self._wal)
            except OSError as exc:
                serving.set_exception(exc)
                serving.exception()  # retrieved here: a caller that was cancelled must not leave it unretrieved
                continue
            except asyncio.CancelledError:
                serving.cancel()
                if self._waiting is not None:
                    self._waiting.cancel()
                    self._waiting = None
                raise
            serving.set_result(None)
