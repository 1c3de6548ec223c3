"""The status page's HTTP server: a static page and the JSON it polls, on loopback only.

Two threads: one polls the :class:`~xchat.statuspage.collector.Collector` every
``interval`` seconds, the other serves

* ``/`` — ``static/index.html``, with ``static/app.js`` and ``static/style.css``
  (plain files: no build step, nothing fetched from elsewhere, which the
  Content-Security-Policy enforces in the browser too);
* ``/status.json`` — the collector's latest snapshot.

It binds 127.0.0.1 and answers only requests addressed to it by that name or
``localhost`` (a web page elsewhere cannot reach it through DNS rebinding). It
serves only what the collector holds: addresses and numbers, no credentials.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from types import TracebackType

from xchat.mesh.ports import free_port
from xchat.statuspage.collector import Collector

HOST = "127.0.0.1"
POLL_INTERVAL_S = 1.0  # the page refreshes as often; one poll of a three-region mesh takes ~50 ms
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

log = logging.getLogger("xchat.statuspage")


def _static(name: str) -> bytes:
    return (resources.files("xchat.statuspage") / "static" / name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "xchat-status"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host not in (HOST, "localhost"):
            self._send(421, b"misdirected request\n", "text/plain; charset=utf-8")
            return
        path = self.path.split("?", 1)[0]
        if path == "/status.json":
            body = json.dumps(self.server.collector.latest()).encode()
            self._send(200, body, "application/json")
        elif path in STATIC:
            name, kind = STATIC[path]
            self._send(200, self.server.files[name], kind)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, collector: Collector) -> None:
        self.collector = collector
        self.files = {name: _static(name) for name, _ in STATIC.values()}
        super().__init__((HOST, port), _Handler)


class StatusPage:
    """Serves the page for ``collector`` on ``127.0.0.1:port`` (0: a free port) until :meth:`close`."""

    def __init__(self, collector: Collector, *, port: int = 0, interval: float = POLL_INTERVAL_S) -> None:
        self.collector = collector
        self.interval = interval
        self._server = _Server(port or free_port(), collector)
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="xchat-statuspage-http", daemon=True),
            threading.Thread(target=self._poll_forever, name="xchat-statuspage-poll", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def _poll_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                self.collector.poll()
            except Exception:  # a bug in one poll must not freeze the page: the next one tries again
                log.exception("status page: poll failed")
            self._stopping.wait(self.interval)

    def close(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self.collector.close()

    def __enter__(self) -> StatusPage:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
