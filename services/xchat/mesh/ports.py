"""Loopback ports for the processes of a local mesh (tests, drills, ``xchat up``)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port free now and not handed out before by this process.

    Drawn from below the kernel's ephemeral range: a port the kernel picks for
    ``bind(0)`` can be taken by any outgoing connection's local end before the
    server that was meant to have it binds it (seen as ``Address already in
    use`` on a busy test machine). Ports below the range are only ever taken
    by an explicit bind.
    """
    low = _ephemeral_low()
    for _ in range(500):
        port = random.randint(PORT_FLOOR, low - 1)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as sock:  # a crowded machine: fall back to the kernel's choice
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


PORT_FLOOR = 10000
_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, PORT_FLOOR + 1000)
