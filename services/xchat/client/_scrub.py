"""Secure deletion's WAL scrub for ``LocalState`` (docs/adr/0012-sdk-state-at-rest.md).

``secure_delete`` zeroes what a delete or a replacement frees in the database
file, but the WAL keeps every earlier version of a page until a checkpoint,
and then only resets its write position. So a committed transaction that
replaced or deleted a secret (a session's superseded chain keys, a consumed
prekey, an acknowledged plaintext) asks for ``wal_checkpoint(TRUNCATE)``: the
pages' last versions go to the database file and the WAL is cut to zero bytes.

Each scrub costs two fsyncs on the caller's thread, so scrubs are coalesced:
at most one per ``delay`` while an event loop runs (a timer; retried while a
transaction is open, since the receive path awaits inside one), at once when
no loop runs. ``LocalState`` also scrubs at open (a crashed run may have left
a WAL) and at close.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

log = logging.getLogger(__name__)


class WalScrubber:
    def __init__(self, db: sqlite3.Connection, *, delay: float) -> None:
        self._db = db
        self._delay = delay
        self._handle: asyncio.TimerHandle | None = None
        self._closed = False
        self.pending = False

    def superseded(self) -> None:
        """A secret was replaced or deleted: scrub once it is committed."""
        self.pending = True
        if not self._db.in_transaction:
            self.schedule()

    def committed(self) -> None:
        if self.pending:
            self.schedule()

    def schedule(self) -> None:
        if self._handle is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.now()  # no event loop to coalesce on (tools, tests): now
            return
        self._handle = loop.call_later(self._delay, self._due)

    def _due(self) -> None:
        self._handle = None
        if self._closed or not self.pending:
            return
        if self._db.in_transaction:
            self.schedule()  # a transaction spans an await: after it
            return
        try:
            self.now()
        except sqlite3.Error as exc:
            log.warning("could not scrub the state file's WAL (will retry): %s", exc)
            self.pending = True
            self.schedule()

    def now(self) -> None:
        """Moves the WAL's last page versions into the database file and truncates the WAL to zero."""
        self.pending = False
        busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            self.pending = True  # another connection reads: the next commit retries

    def close(self) -> None:
        """Cancels the timer and scrubs what is pending (call before closing the connection)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.pending and not self._db.in_transaction and not self._closed:
            self.now()
        self._closed = True
