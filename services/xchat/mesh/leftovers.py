"""The processes of a local mesh, found by its work directory.

A mesh's nats-servers name the directory on their command line and its
service processes in their environment (key and certificate paths), so a
mesh left behind by a killed ``xchat up`` can be found and stopped without
its parent's bookkeeping (tests use this to never leave one running).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def processes_of(workdir: Path) -> list[int]:
    """Pids of the processes (other than this one) that name ``workdir``."""
    found = []
    needle = str(workdir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if needle in seen:
            found.append(int(entry.name))
    return found


def kill(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` that still runs."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
