"""Loopback TCP forwarders: how the kind back end reaches Services inside the cluster.

The mesh certificate names 127.0.0.1 and localhost only, so the SDK dials a
loopback port and a forwarder relays each connection to the region's node.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["Forward", "Forwarder", "TcpForward"]


class Forward(Protocol):
    address: str

    def close(self) -> None: ...


Forwarder = Callable[[Callable[[], tuple[str, int]]], Forward]


class TcpForward:
    """A loopback TCP forwarder: ``127.0.0.1:<ephemeral>`` -> ``target()``.

    ``target`` is asked on every new connection (a restarted node may come back
    with another address). A target that does not answer within
    ``connect_timeout`` closes the client's connection, which gRPC reports as
    UNAVAILABLE, as it would for the node's own address.
    """

    def __init__(self, target: Callable[[], tuple[str, int]], *, connect_timeout: float = 3.0) -> None:
        self._target = target
        self._timeout = connect_timeout
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"forward-{self.address}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target(), timeout=self._timeout)
        except Exception:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._conns.update((client, upstream))
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
            with self._lock:
                self._conns.discard(s)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
