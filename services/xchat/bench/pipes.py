"""Waiting for a child process's reply without ever blocking a shutdown.

The bench drives its child processes (receiving apps, crowds of online
devices) over ``multiprocessing`` pipes and waits for their replies in a
worker thread, so the sending app's event loop keeps running. A thread blocked
in a long ``poll`` would hold up interpreter exit on Ctrl-C (asyncio joins its
executor's threads), so replies are awaited in short slices and give up as
soon as the owner is stopping.
"""

from __future__ import annotations

import multiprocessing.connection
import threading
import time
from typing import Any

SLICE_S = 0.2


class Stopped(RuntimeError):
    """The owner stopped while a reply was awaited."""


def reply(conn: multiprocessing.connection.Connection, timeout: float, stopping: threading.Event, *, what: str) -> tuple[Any, ...]:
    """The next message on ``conn``; ``RuntimeError`` after ``timeout`` s, ``Stopped`` once ``stopping`` is set."""
    deadline = time.monotonic() + timeout
    while not stopping.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{what} did not answer within {timeout:.0f}s")
        try:
            if conn.poll(min(SLICE_S, left)):
                message: tuple[Any, ...] = conn.recv()
                return message
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"{what} exited") from exc
    raise Stopped(f"{what}: stopped while waiting")
